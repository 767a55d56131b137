// swift-tools-version: 6.0
// Benchmarks of the rule language (see run.sh, which also runs CEL and Rego for comparison).
import PackageDescription

let package = Package(
    name: "rules-bench",
    dependencies: [.package(path: "../..")],
    targets: [
        .target(name: "CHeap"),
        .executableTarget(
            name: "rules-bench",
            dependencies: ["CHeap", .product(name: "GateRules", package: "main")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
