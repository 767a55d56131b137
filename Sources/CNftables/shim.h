#ifndef GATEHOUSE_CNFTABLES_SHIM_H
#define GATEHOUSE_CNFTABLES_SHIM_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <nftables/libnftables.h>
#endif
