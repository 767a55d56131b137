/* Compile-time checks of the ABI's layout on this platform: a change that moves a field fails
 * the build here before it can reach a plugin built against the published header. */
#include "gatehouse_plugin.h"

_Static_assert(sizeof(gh_bytes) == 16, "gh_bytes layout");
_Static_assert(sizeof(gh_property) == 32, "gh_property layout");
_Static_assert(sizeof(gh_message) == 88, "gh_message layout");
_Static_assert(offsetof(gh_plugin_descriptor, ops) == 32, "descriptor header layout");
_Static_assert(offsetof(gh_host_api, log) == 8, "host api header layout");
/* 6 functions of 1.0, deliver_result (0.2, from the reserved space), 7 reserved: the size is unchanged. */
_Static_assert(sizeof(gh_host_api) == 8 + 14 * sizeof(void *), "host api keeps its size");
