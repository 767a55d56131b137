import CNftables
import FoundationEssentials
import GatehouseBasics

/// libnftables, the C API of `nft`: one context, output and errors captured into buffers.
/// Nothing outside this file sees a C type.
final class Nftables {
    struct Failure: Error, CustomStringConvertible {
        /// nft's own message: "Error: ...", the offending line and a caret under the place.
        var message: String
        var description: String { message }
    }

    private let context: OpaquePointer

    init() throws(Failure) {
        guard let context = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
            throw Failure(message: "cannot create an nftables context")
        }
        self.context = context
        nft_ctx_buffer_output(context)
        nft_ctx_buffer_error(context)
    }

    deinit { nft_ctx_free(context) }

    /// Runs an nft script as one transaction: all of it applies, or none of it. With `dryRun`
    /// the kernel checks it and nothing changes.
    func run(_ script: String, dryRun: Bool = false) throws(Failure) {
        nft_ctx_set_dry_run(context, dryRun)
        defer { nft_ctx_set_dry_run(context, false) }
        nft_ctx_output_set_flags(context, 0)
        let status = nft_run_cmd_from_buffer(context, script)
        _ = output()
        if status != 0 { throw Failure(message: errors().trimmingWhitespace) }
    }

    /// `nft list table inet NAME`, as JSON (`json: true`) or text; without counter values when
    /// `stateless`. nil when the table does not exist.
    func listTable(_ name: String, json: Bool, stateless: Bool) -> String? {
        var flags: UInt32 = 0
        if json { flags |= UInt32(NFT_CTX_OUTPUT_JSON) }
        if stateless { flags |= UInt32(NFT_CTX_OUTPUT_STATELESS) }
        nft_ctx_output_set_flags(context, flags)
        defer { nft_ctx_output_set_flags(context, 0) }
        let status = nft_run_cmd_from_buffer(context, "list table inet \(name)")
        _ = errors()
        let text = output()
        return status == 0 ? text : nil
    }

    private func output() -> String {
        guard let buffer = nft_ctx_get_output_buffer(context) else { return "" }
        return String(cString: buffer)
    }

    private func errors() -> String {
        guard let buffer = nft_ctx_get_error_buffer(context) else { return "" }
        return String(cString: buffer)
    }
}
