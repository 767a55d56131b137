#ifndef GATEHOUSE_CMOSQUITTO_SHIM_H
#define GATEHOUSE_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#endif
