// swift-tools-version: 6.0
// A libFuzzer target over the rule language's front end (lexer, parser, checker), its
// formatter and its evaluator. See README.md for the command.
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
    ],
    swiftLanguageModes: [.v6]
)
