// libFuzzer's entry for programs that own `main` (SwiftPM points `main` at the executable
// module's entry, so the fuzzer is started from Swift through this).
#ifndef FUZZER_DRIVER_H
#define FUZZER_DRIVER_H
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
