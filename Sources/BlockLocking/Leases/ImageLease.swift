// ImageLease: one open image's lease from a lease engine, following the open's permissions —
// taken with the permission locks, changed on reopen, given back on close and on the migration
// source's inactivate.
import Synchronization

public final class ImageLease: Sendable {
    public let engine: any LeaseEngine
    public let image: LeasedImage
    private let held = Mutex<LeaseMode?>(nil)

    public init(engine: any LeaseEngine, image: LeasedImage) {
        self.engine = engine
        self.image = image
    }

    deinit {
        if held.withLock({ $0 }) != nil { try? engine.release(image) }
    }

    /// The mode held now; nil when none.
    public var mode: LeaseMode? { held.withLock { $0 } }

    /// Takes, changes or (nil) gives back the lease; on failure the old mode stays.
    public func set(_ mode: LeaseMode?) throws(LockingError) {
        try held.withLock { (held) throws(LockingError) in
            guard held != mode else { return }
            if let mode {
                try engine.acquire(image, mode, holding: held)
            } else {
                try engine.release(image)
            }
            held = mode
        }
    }

    /// Why no write may be issued under this lease any more: the engine took it away.
    public var loss: LockingError? {
        guard mode != nil else { return nil }
        return engine.loss
    }
}
