// gatehouse-devhub: the offline IoT Hub + DPS emulator (`serve`) and the CLI of its control API.
import ArgumentParser
import DevHubKit
import FoundationEssentials
import GatehouseBasics
import IoTHubWire
import Logging
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

struct DevHubCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse-devhub",
        abstract: "An offline Azure IoT Hub + DPS emulator that Azure's device SDKs accept.",
        subcommands: [
            Serve.self, Group.self, Enrollment.self, Device.self, Devices.self, Connections.self, Telemetry.self,
            C2D.self,
            Method.self, Twin.self,
        ])
}

/// Where the control API is: `--url`, `$DEVHUB_URL`, the `devhub.json` of `--data`, or the default.
struct ControlOptions: ParsableArguments {
    @Option(
        help:
            "The control API, e.g. http://127.0.0.1:8080 (default: $DEVHUB_URL, or --data's devhub.json)."
    )
    var url: String?

    @Option(help: "A DevHub data folder; its devhub.json says where the control API is.")
    var data: String?

    func client() throws -> ControlClient {
        var text = url ?? ProcessInfo.processInfo.environment["DEVHUB_URL"]
        if text == nil, let data {
            let json = try JSONValue(
                parsing: Array(FileManager.default.contents(atPath: data + "/devhub.json") ?? Data()))
            text = json["control"]?.stringValue
        }
        guard let client = ControlClient(url: text ?? "http://127.0.0.1:8080") else {
            throw ValidationError("cannot read the control API address \(text ?? "")")
        }
        return client
    }

    /// Sends a request; prints the JSON answer; fails with the API's error message.
    @discardableResult
    func call(
        _ method: ControlClient.Method, _ path: String, body: JSONValue? = nil,
        print printIt: Bool = true
    ) throws
        -> JSONValue
    {
        let response = try client().request(method, path, body: body)
        guard (200..<300).contains(response.status) else {
            let message = response.body["error"]?["message"]?.stringValue ?? response.body.description
            StandardStreams.writeError("gatehouse-devhub: \(response.status): \(message)\n")
            throw ExitCode(response.status == 404 ? 2 : 1)
        }
        if printIt { print(response.body.prettyDescription) }
        return response.body
    }
}

func encodePath(_ segment: String) -> String { PropertyBag.percentEncode(segment) }

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the hub, DPS and the control API.")

    @Option(help: "The data folder (state, certificates, devhub.json).")
    var data: String

    @Option(help: "MQTT/TLS listen address host:port, for both the hub and DPS.")
    var mqtt = "127.0.0.1:8883"

    @Option(help: "Control API listen address host:port.")
    var http = "127.0.0.1:8080"

    @Option(
        name: .customLong("dps-https"),
        help: "DPS over HTTPS listen address host:port (needed for TPM attestation; same CA as MQTT).")
    var dpsHTTPS: String?

    @Option(
        help:
            "IoT Hub over AMQP/TLS (amqps) listen address host:port, e.g. 127.0.0.1:5671 (default: no AMQP listener)."
    )
    var amqp: String?

    @Option(help: "The hub host name devices connect to (default: the MQTT listen host).")
    var hubName: String?

    @Option(help: "The DPS ID scope.")
    var idScope = "0ne00DEVHUB"

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(help: "How many received telemetry messages to keep.")
    var telemetryRetention = 1_000_000

    func run() throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level \(logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "devhub")
        var configuration = DevHubConfiguration(dataDirectory: data)
        (configuration.mqttHost, configuration.mqttPort) = try Self.split(mqtt, option: "--mqtt")
        (configuration.httpHost, configuration.httpPort) = try Self.split(http, option: "--http")
        if let dpsHTTPS {
            let (host, port) = try Self.split(dpsHTTPS, option: "--dps-https")
            configuration.dpsHTTPSHost = host
            configuration.dpsHTTPSPort = port
        }
        if let amqp {
            let (host, port) = try Self.split(amqp, option: "--amqp")
            configuration.amqpHost = host
            configuration.amqpPort = port
        }
        configuration.hubName = hubName
        configuration.idScope = idScope
        configuration.telemetryRetention = telemetryRetention
        let server: DevHubServer
        do {
            server = try DevHubServer.start(configuration, logger: logger)
        } catch {
            logger.critical("\(error)")
            throw ExitCode(69)  // EX_UNAVAILABLE
        }
        server.runUntilSignalled()
    }

    static func split(_ address: String, option: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"),
            let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("\(option) takes host:port, not \(address)") }
        let host = String(address[..<colon]).trimming(["[", "]"])
        return (host, port)
    }
}

struct Group: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DPS enrollment groups (symmetric key).",
        subcommands: [Create.self, List.self, DeriveKey.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or replace an enrollment group.")
        @OptionGroup var control: ControlOptions
        @Argument var name: String
        @Option(help: "The group's primary key, base64 (default: a random one).") var key: String?
        @Option(help: "The group's secondary key, base64.") var secondaryKey: String?
        @Flag(help: "Create it disabled: its devices attest, their registrations end failed.") var disabled = false

        func run() throws {
            var body = JSONValue.object(["name": .string(name)])
            if let key { body.set("primaryKey", .string(key)) }
            if let secondaryKey { body.set("secondaryKey", .string(secondaryKey)) }
            if disabled { body.set("provisioningStatus", .string("disabled")) }
            try control.call(.post, "/api/enrollment-groups", body: body)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List enrollment groups.")
        @OptionGroup var control: ControlOptions
        func run() throws { try control.call(.get, "/api/enrollment-groups") }
    }

    struct DeriveKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "derive-key",
            abstract: "Print the device key a registration id gets from a group.")
        @OptionGroup var control: ControlOptions
        @Argument var name: String
        @Argument var registrationID: String

        func run() throws {
            let body = try control.call(
                .get,
                "/api/enrollment-groups/\(encodePath(name))?registrationId=\(encodePath(registrationID))",
                print: false)
            print(body["deviceKey"]?.stringValue ?? "")
        }
    }
}

struct Enrollment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DPS individual enrollments.", subcommands: [Create.self, TPM.self, List.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or replace an individual enrollment.")
        @OptionGroup var control: ControlOptions
        @Argument var registrationID: String
        @Option(help: "Symmetric primary key, base64 (default: a random one).") var key: String?
        @Option(help: "TPM endorsement key, base64 (a TPM enrollment instead of a symmetric key).")
        var endorsementKey: String?
        @Option(help: "The hub device id (default: the registration id).") var deviceID: String?

        func run() throws {
            var body = JSONValue.object(["registrationId": .string(registrationID)])
            if let key { body.set("primaryKey", .string(key)) }
            if let endorsementKey { body.set("endorsementKey", .string(endorsementKey)) }
            if let deviceID { body.set("deviceId", .string(deviceID)) }
            try control.call(.post, "/api/enrollments", body: body)
        }
    }

    struct TPM: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tpm",
            abstract: "Create or replace a TPM individual enrollment (DPS over HTTPS).",
            discussion: """
                The endorsement key is the TPM's marshalled TPM2B_PUBLIC, as `tpm2_readpublic -c 0x81010001 \
                -o ek.pub` writes it.
                """)
        @OptionGroup var control: ControlOptions
        @Argument var registrationID: String
        @Option(help: "The endorsement key, base64 of TPM2B_PUBLIC.") var endorsementKey: String?
        @Option(help: "A file holding the endorsement key's TPM2B_PUBLIC (binary).") var endorsementKeyFile: String?
        @Option(help: "The hub device id (default: the registration id).") var deviceID: String?
        @Flag(help: "Enroll it disabled: attestation succeeds, the registration ends failed.") var disabled = false
        @Option(
            help: ArgumentHelp(
                "Inject a fault into its HTTPS registrations (tests): tamper-authentication-key or throttle.",
                valueName: "fault"))
        var fault: String?

        func run() throws {
            let key: String
            switch (endorsementKey, endorsementKeyFile) {
            case (let text?, nil): key = text
            case (nil, let path?): key = try Data(contentsOf: URL(fileURLWithPath: path)).base64EncodedString()
            default: throw ValidationError("give --endorsement-key or --endorsement-key-file")
            }
            var body = JSONValue.object(["registrationId": .string(registrationID), "endorsementKey": .string(key)])
            if let deviceID { body.set("deviceId", .string(deviceID)) }
            if disabled { body.set("provisioningStatus", .string("disabled")) }
            if let fault { body.set("fault", .string(fault)) }
            try control.call(.post, "/api/enrollments", body: body)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List individual enrollments.")
        @OptionGroup var control: ControlOptions
        func run() throws { try control.call(.get, "/api/enrollments") }
    }
}

struct Device: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hub device identities.", subcommands: [Create.self, Show.self, Delete.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a device with SAS keys.")
        @OptionGroup var control: ControlOptions
        @Argument var deviceID: String
        @Option(help: "Primary key, base64 (default: a random one).") var key: String?

        func run() throws {
            var body = JSONValue.object(["deviceId": .string(deviceID)])
            if let key { body.set("primaryKey", .string(key)) }
            try control.call(.post, "/api/devices", body: body)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a device, its keys and connection state.")
        @OptionGroup var control: ControlOptions
        @Argument var deviceID: String
        func run() throws { try control.call(.get, "/api/devices/\(encodePath(deviceID))") }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a device (and disconnect it).")
        @OptionGroup var control: ControlOptions
        @Argument var deviceID: String
        func run() throws { try control.call(.delete, "/api/devices/\(encodePath(deviceID))") }
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List devices and their connection states.")
    @OptionGroup var control: ControlOptions
    @Flag(help: "Print the JSON answer.") var json = false

    func run() throws {
        let body = try control.call(.get, "/api/devices", print: json)
        guard !json, case .array(let devices) = body else { return }
        for device in devices {
            let id = device["deviceId"]?.stringValue ?? "?"
            let state =
                device["connected"] == .bool(true)
                ? "connected since \(device["connectedSince"]?.stringValue ?? "?") from \(device["remoteAddress"]?.stringValue ?? "?") over \(device["transport"]?.stringValue ?? "?") (connection \(device["connectionId"]?.intValue.map(String.init) ?? "?"))"
                : "disconnected"
            print("\(id)\t\(state)\t(\(device["source"]?.stringValue ?? ""))")
        }
    }
}

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List network connections and the devices on each (many share one AMQP connection).")
    @OptionGroup var control: ControlOptions
    @Flag(help: "Print the JSON answer.") var json = false

    func run() throws {
        let body = try control.call(.get, "/api/connections", print: json)
        guard !json, case .array(let connections) = body else { return }
        for connection in connections {
            let id = connection["id"]?.intValue.map(String.init) ?? "?"
            let transport = connection["transport"]?.stringValue ?? "?"
            let authentication = connection["authentication"]?.stringValue.map { ", \($0)" } ?? ""
            let devices = connection["devices"]?.arrayValue?.compactMap(\.stringValue) ?? []
            print(
                "\(id)\t\(transport)\(authentication)\tfrom \(connection["remoteAddress"]?.stringValue ?? "?")\t\(devices.count) device(s): \(devices.prefix(10).joined(separator: " "))\(devices.count > 10 ? " …" : "")"
            )
        }
    }
}

struct Telemetry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show received device-to-cloud messages.")
    @OptionGroup var control: ControlOptions
    @Option(help: "Only this device's messages.") var device: String?
    @Option(help: "Only messages after this sequence number.") var after: Int64 = 0
    @Option(help: "At most this many messages.") var limit = 100
    @Flag(help: "Print the JSON answer.") var json = false

    func run() throws {
        var path = "/api/telemetry?after=\(after)&limit=\(limit)"
        if let device { path += "&device=\(encodePath(device))" }
        let body = try control.call(.get, path, print: json)
        guard !json, case .array(let messages)? = body["messages"] else { return }
        for message in messages {
            let properties =
                (message["properties"].flatMap { value -> [JSONValue]? in
                    if case .array(let pairs) = value { return pairs }
                    return nil
                } ?? []).map { pair -> String in
                    guard case .array(let parts) = pair, parts.count == 2 else { return "?" }
                    return "\(parts[0].stringValue ?? "")=\(parts[1].stringValue ?? "(null)")"
                }.joined(separator: " ")
            let payload =
                message["payload"]?.stringValue ?? "base64:\(message["payloadBase64"]?.stringValue ?? "")"
            print(
                "#\(message["seq"]?.description ?? "?") \(message["receivedAt"]?.stringValue ?? "") \(message["deviceId"]?.stringValue ?? "") [\(properties)] \(payload)"
            )
        }
    }
}

struct C2D: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "c2d",
        abstract: "Send a cloud-to-device message (queued while the device is offline).")
    @OptionGroup var control: ControlOptions
    @Argument var deviceID: String
    @Argument var payload: String = ""
    @Option(
        name: .customLong("property"),
        help: "An application property key=value; repeatable, kept in order.")
    var properties: [String] = []

    func run() throws {
        let pairs: [JSONValue] = try properties.map { text in
            guard let equals = text.firstIndex(of: "=") else {
                throw ValidationError("--property takes key=value")
            }
            return .array([
                .string(String(text[..<equals])), .string(String(text[text.index(after: equals)...])),
            ])
        }
        try control.call(
            .post, "/api/devices/\(encodePath(deviceID))/c2d",
            body: .object(["payload": .string(payload), "properties": .array(pairs)]))
    }
}

struct Method: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invoke a direct method and print the device's answer.")
    @OptionGroup var control: ControlOptions
    @Argument var deviceID: String
    @Argument var name: String
    @Argument(help: "The JSON payload.") var payload = "null"
    @Option(help: "Seconds to wait for the device's answer.") var timeout = 30.0

    func run() throws {
        let json: JSONValue
        do { json = try JSONValue(parsing: payload) } catch {
            throw ValidationError("the payload is not JSON: \(error)")
        }
        guard let seconds = JSONNumber(timeout) else { throw ValidationError("--timeout must be a finite number") }
        try control.call(
            .post, "/api/devices/\(encodePath(deviceID))/methods/\(encodePath(name))",
            body: .object(["payload": json, "responseTimeoutInSeconds": .number(seconds)]))
    }
}

struct Twin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and patch device twins.", subcommands: [Get.self, PatchDesired.self])

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a device's twin.")
        @OptionGroup var control: ControlOptions
        @Argument var deviceID: String
        func run() throws { try control.call(.get, "/api/devices/\(encodePath(deviceID))/twin") }
    }

    struct PatchDesired: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "patch-desired",
            abstract: "Merge a JSON patch into the desired properties (pushed to the device).")
        @OptionGroup var control: ControlOptions
        @Argument var deviceID: String
        @Argument var patch: String

        func run() throws {
            let json: JSONValue
            do { json = try JSONValue(parsing: patch) } catch {
                throw ValidationError("the patch is not JSON: \(error)")
            }
            try control.call(.patch, "/api/devices/\(encodePath(deviceID))/twin/desired", body: json)
        }
    }
}

DevHubCommand.main()
