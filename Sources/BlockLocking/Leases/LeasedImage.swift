// LeasedImage: an image as a lease engine names it.

/// An image as a lease engine names it: every host must derive the same name for the same image.
public struct LeasedImage: Sendable, Hashable {
    /// The image's canonical path, which every host must see the same (as libvirt's disk leases require).
    public var path: String
    /// The engine's name for its lease (≤ 47 bytes for sanlock).
    public var resourceName: String

    public init(path: String, resourceName: String) {
        self.path = path
        self.resourceName = resourceName
    }
}
