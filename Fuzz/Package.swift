// swift-tools-version: 6.0
// A libFuzzer target over the rule language's front end (lexer, parser, checker), its
// formatter and its evaluator; and one over the site subscriber's MQTT read loop
// (SiteMQTTFuzzer). See README.md for the commands.
import PackageDescription

let package = Package(
    name: "RulesFuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "RulesFuzzer",
            dependencies: ["CFuzzerDriver", .product(name: "GateRules", package: "main")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        // The site subscriber's MQTT read loop (decoder in skip-oversized mode), without sockets.
        .executableTarget(
            name: "SiteMQTTFuzzer",
            dependencies: ["CFuzzerDriver", .product(name: "MQTTCodec", package: "main")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
