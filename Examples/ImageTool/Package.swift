// swift-tools-version:6.0
// ImageTool: BlockLayer used as a library, the way another package would use it — by path here,
// by URL and version elsewhere. Scripts/example builds and runs it (part of the test command).
import PackageDescription

let package = Package(
    name: "ImageTool",
    dependencies: [
        // Named, since a path dependency is otherwise known by its folder's name, which differs
        // between clones.
        .package(name: "BlockLayer", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "image-tool", dependencies: [.product(name: "BlockLayer", package: "BlockLayer")]),
    ],
    swiftLanguageModes: [.v6]
)
