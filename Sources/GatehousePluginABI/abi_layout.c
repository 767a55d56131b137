/* The ABI module's one translation unit. Including the header builds its compile-time layout
 * checks (see the end of gatehouse_plugin.h) with every build of the package. */
#include "gatehouse_plugin.h"
