// qpid-proton's C library (AMQP 1.0): the engine, the connection driver, the proactor, messages
// and SASL/TLS. Used by the `amqp` transport plugin and DevHub's AMQP endpoint
// (docs/protocols.md §3).
#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/engine.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/listener.h>
#include <proton/message.h>
#include <proton/netaddr.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/ssl.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <proton/types.h>
