/// The input schema: what rules may read. Knowing it lets the checker reject `device.tag` or
/// `gatway.tenant` before a rule ever runs, with a "did you mean".
///
/// `token` is different: its fields are the caller's JWT claims, open JSON that varies by
/// identity provider. Any claim may be read (an absent one is *missing*); the well-known claims
/// below only feed a warning when a name is one typo away from one of them.

/// The six inputs a rule can read.
enum Root: Int, CaseIterable, Sendable {
    case command, token, device, gateway, message, now

    var name: String { String(describing: self) }

    init?(name: String) {
        guard let root = Root.allCases.first(where: { $0.name == name }) else { return nil }
        self = root
    }
}

/// What the checker knows about a value before the rule runs.
indirect enum StaticType: Sendable, Equatable {
    case bool, number, string, duration, size
    case list(StaticType)
    /// A map whose keys are not known in advance (tags, properties): any key may be read.
    case map(StaticType)
    /// One of the schema's objects, with a fixed set of fields.
    case object(ObjectShape)
    /// Anything JSON can hold: known only at run time.
    case dynamic
    /// The type of an expression that already produced an error; it never causes another.
    case error

    var isUnknown: Bool { self == .dynamic || self == .error }

    /// "a string", "a list of strings", "the `device` input".
    var phrase: String {
        switch self {
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .duration: "a duration"
        case .size: "a size"
        case .list(let element): element.isUnknown ? "a list" : "a list of \(element.plural)"
        case .map: "a map"
        case .object(let shape): "the `\(shape.name)` input"
        case .dynamic: "a value"
        case .error: "an invalid value"
        }
    }

    var plural: String {
        switch self {
        case .bool: "booleans"
        case .number: "numbers"
        case .string: "strings"
        case .duration: "durations"
        case .size: "sizes"
        case .list: "lists"
        case .map, .object: "maps"
        case .dynamic, .error: "values"
        }
    }
}

struct ObjectShape: Sendable, Equatable {
    let name: String
    let fields: [String: StaticType]
    /// Open objects (the token's claims) accept any field.
    let open: Bool
}

enum Schema {
    static let command = ObjectShape(
        name: "command",
        fields: [
            "name": .string, "kind": .string, "args": .dynamic, "properties": .map(.string), "id": .string,
            "timeout": .duration,
        ],
        open: false)

    /// Claims commonly found in the JWTs gateways see (Entra ID, Keycloak, Auth0, OIDC).
    static let wellKnownClaims: [String] = [
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "tid", "oid", "azp", "appid", "name", "email", "upn",
        "preferred_username", "roles", "role", "groups", "scp", "scope", "site", "sites", "tenant", "amr", "acr",
    ]

    static let token = ObjectShape(
        name: "token", fields: Dictionary(uniqueKeysWithValues: wellKnownClaims.map { ($0, StaticType.dynamic) }),
        open: true)

    static let device = ObjectShape(
        name: "device",
        fields: ["id": .string, "model": .string, "type": .string, "tags": .map(.dynamic), "twin": .dynamic],
        open: false)

    static let gateway = ObjectShape(
        name: "gateway",
        fields: ["id": .string, "tenant": .string, "site": .string, "tags": .map(.dynamic)],
        open: false)

    static let message = ObjectShape(
        name: "message",
        fields: [
            "topic": .string, "size": .size, "properties": .map(.string), "body": .dynamic, "content_type": .string,
        ],
        open: false)

    static let now = ObjectShape(
        name: "now",
        fields: [
            "unix": .number, "hour": .number, "minute": .number, "second": .number, "weekday": .string, "date": .string,
        ],
        open: false)

    static func shape(of root: Root) -> ObjectShape {
        switch root {
        case .command: command
        case .token: token
        case .device: device
        case .gateway: gateway
        case .message: message
        case .now: now
        }
    }

    /// The inputs a kind of rule receives: a command carries a caller's token; telemetry
    /// carries a message and no token.
    static let commandRoots: Set<Root> = [.command, .token, .device, .gateway, .now]
    static let telemetryRoots: Set<Root> = [.message, .device, .gateway, .now]

    /// The built-in functions and their arities.
    static let functions: [String: Int] = ["has": 1, "len": 1, "lower": 1, "split": 2]
}
