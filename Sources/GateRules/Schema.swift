/// The input schema: what rules may read. Knowing it lets the checker reject `device.tag` or
/// `gatway.tenant` before a rule ever runs, with a "did you mean".
///
/// `token` is different: its fields are the caller's JWT claims, open JSON that varies by
/// identity provider. Any claim may be read (an absent one is *missing*). The registered
/// claims of RFC 7519 and Entra ID's have static types (`exp` a time, `roles` a list of
/// strings, `tid` a string…), so misusing one is a check-time error; the others are open JSON,
/// and a name one typo away from a well-known claim gets a warning.

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
    /// A point in time as seconds since 1970 (RFC 7519's NumericDate: `exp`, `now.unix`).
    /// A number at run time; the checker keeps it apart so `token.exp > "5"` is an error and
    /// `now.unix - token.iat < 5m` is a duration compared with a duration.
    case timestamp
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
        case .timestamp: "a time (seconds since 1970)"
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
        case .timestamp: "times"
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

    /// Claims commonly found in the JWTs gateways see (Entra ID, Keycloak, Auth0, OIDC), with
    /// their types where RFC 7519 or Entra ID fixes one. `aud` may be a string or a list, and
    /// the rest vary by identity provider: they are open (`dynamic`).
    static let wellKnownClaims: [String: StaticType] = [
        "exp": .timestamp, "nbf": .timestamp, "iat": .timestamp,
        "roles": .list(.string), "groups": .list(.string), "amr": .list(.string), "wids": .list(.string),
        "scp": .string, "tid": .string, "oid": .string, "sub": .string, "iss": .string, "appid": .string,
        "azp": .string, "name": .string, "preferred_username": .string,
        "aud": .dynamic, "jti": .dynamic, "email": .dynamic, "upn": .dynamic, "role": .dynamic, "scope": .dynamic,
        "site": .dynamic, "sites": .dynamic, "tenant": .dynamic, "acr": .dynamic,
    ]

    static let token = ObjectShape(name: "token", fields: wellKnownClaims, open: true)

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
            "unix": .timestamp, "hour": .number, "minute": .number, "second": .number, "weekday": .string,
            "date": .string,
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
