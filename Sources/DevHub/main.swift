print("gatehouse-devhub: not yet")
