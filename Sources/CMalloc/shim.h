#ifndef GATEHOUSE_CMALLOC_SHIM_H
#define GATEHOUSE_CMALLOC_SHIM_H
/* glibc's malloc tuning (mallopt, malloc_trim), which Swift's Glibc module does not export. */
#include <malloc.h>

/* Two arenas instead of eight per core: the daemon's few, mostly idle threads do not need more,
 * and per-thread arenas fragment into idle RSS. */
static inline int gh_malloc_limit_arenas(void) { return mallopt(M_ARENA_MAX, 2); }

/* Returns freed heap pages to the kernel (after a burst of connections, say). */
static inline int gh_malloc_trim(void) { return malloc_trim(0); }
#endif
