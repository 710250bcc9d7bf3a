// LeaseMode: shared or exclusive, and which one a set of held QEMU permissions needs.

/// What an open asks of the other hosts: to share the image for reading, or to have it alone.
public enum LeaseMode: String, Sendable, Hashable, CustomStringConvertible {
    /// Other hosts may read too: the lease of an open that only reads.
    case shared
    /// No other host may hold the image: the lease of an open that writes or resizes.
    case exclusive

    /// The word in conflict messages and `blk locks` ("…, generation 3, exclusive").
    public var description: String { rawValue }

    /// The lease that stands for a set of held QEMU permissions: any write or resize needs the
    /// image alone; reading needs writers kept out; holding nothing (force-share, an inactive
    /// migration target) needs no lease.
    public init?(for held: ImagePermissions) {
        if !held.intersection([.write, .resize]).isEmpty {
            self = .exclusive
        } else if !held.isEmpty {
            self = .shared
        } else {
            return nil
        }
    }
}
