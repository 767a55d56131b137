// swift-tools-version: 6.0
// A libFuzzer target over DevHub's MQTT path: the strict decoder (with an encode/decode
// round-trip check) and a real DevHub session (hub device, DPS registration, or raw CONNECT)
// driven over a socketpair. See run.sh for the command.
import PackageDescription

let package = Package(
    name: "DevHubFuzz",
    dependencies: [.package(path: "../..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "DevHubFuzzer",
            dependencies: [
                "CFuzzerDriver",
                .product(name: "MQTTCodec", package: "main"),
                .product(name: "DevHubKit", package: "main"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
