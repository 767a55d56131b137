import GatehousedCommand

// gatehoused on its own (development and the tests); the package ships the `gatehouse` binary,
// which is also gatehoused when called by that name (Sources/gatehouse/main.swift).
await GatehouseDaemon.runMain()
