/// DevHub: an offline IoT Hub + DPS emulator.
public enum DevHubModule {}
