#ifndef GATEHOUSE_CTHREADNAME_SHIM_H
#define GATEHOUSE_CTHREADNAME_SHIM_H
/* Names the calling thread (what `ps -L` and `top -H` show, at most 15 bytes): prctl(2), which
 * Swift's Glibc module does not export. */
#include <sys/prctl.h>

static inline int gh_name_this_thread(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }
#endif
