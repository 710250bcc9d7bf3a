// LeasedImage: an image as a lease engine names it.

/// An image as a lease engine names it: every host must derive the same name for the same image.
public struct LeasedImage: Sendable, Hashable {
    /// The image's canonical path, which every host must see the same (as libvirt's disk leases require).
    public var path: String
    /// The engine's name for its lease (≤ 47 bytes for sanlock).
    public var resourceName: String
    /// A descriptor of this open of the image (-1: none): a fenced holder syncs it before giving
    /// the lease up, so what was written under the lease is on the storage before the lease is.
    public var descriptor: Int32

    /// Usually made by `SanlockEngine.leasedImage(path:)`, which derives the name every host
    /// agrees on.
    public init(path: String, resourceName: String, descriptor: Int32 = -1) {
        self.path = path
        self.resourceName = resourceName
        self.descriptor = descriptor
    }
}
