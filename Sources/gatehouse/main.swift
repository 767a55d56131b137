import ArgumentParser
import GatehouseCLICommands
import GatehousedCommand

// One binary, two commands: called `gatehoused` (the package's /usr/sbin/gatehoused) it is the
// daemon, else the CLI (/usr/bin/gatehouse, a symlink to it). Both link the same NIO, BoringSSL,
// the state store and GatehouseCore, so the package carries one copy of them instead of two
// (packaging/README.md, "Size").
let invokedAs = CommandLine.arguments.first?.split(separator: "/").last ?? ""
if invokedAs == "gatehoused" {
    await GatehouseDaemon.runMain()
} else {
    GatehouseCLI.main()
}
