// Bytes the C heap has handed out and not taken back (glibc's mallinfo2), to measure what a
// compiled policy holds.
#ifndef HEAP_H
#define HEAP_H
#include <malloc.h>
#include <stddef.h>
static inline size_t heap_bytes_in_use(void) { return mallinfo2().uordblks; }
#endif
