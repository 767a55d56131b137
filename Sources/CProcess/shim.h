#ifndef GATEHOUSE_CPROCESS_SHIM_H
#define GATEHOUSE_CPROCESS_SHIM_H
/* The process's Linux capabilities (capset(2), prctl(2)), which Swift's Glibc module does not
 * export. */
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Gives up every capability the process holds, for good: the ambient set is cleared, then the
 * permitted, effective and inheritable sets are emptied (lowering needs no privilege). The bounding
 * set stays as it was (dropping from it needs CAP_SETPCAP); with an empty permitted set and
 * no_new_privs nothing can come back from it. Returns 0, or -1 with errno set. */
static inline int gh_drop_all_capabilities(void) {
    /* EINVAL before Linux 4.3 (no ambient set): nothing to clear. */
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        data[i].effective = 0;
        data[i].permitted = 0;
        data[i].inheritable = 0;
    }
    return (int)syscall(SYS_capset, &header, data);
}

/* Whether the process has any permitted capability: 1 yes, 0 no, -1 on error. */
static inline int gh_has_capabilities(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        if (data[i].permitted != 0) return 1;
    }
    return 0;
}
#endif
