// ImageLease: one open image's lease from a lease engine, following the open's permissions —
// taken with the permission locks, changed on reopen, given back on close and on the migration
// source's inactivate. Once the engine has taken it away, this open never takes it again: its
// caches may hold what another host has since overwritten, so only a new open may write.
import Synchronization

/// One open image's lease, kept apart from the engine so an open that lost its lease stays
/// refused even after the engine registers afresh for other opens.
public final class ImageLease: Sendable {
    /// The engine that grants the lease and fences this process when it takes it away.
    public let engine: any LeaseEngine
    /// The image as the engine names it, the same name on every host.
    public let image: LeasedImage
    private let held = Mutex<LeaseMode?>(nil)
    /// Whether a lease is held, read on every write without taking `held`'s lock.
    private let isHeld = Atomic<Bool>(false)
    private let lostError = Mutex<LockingError?>(nil)

    /// Takes nothing yet: the lease follows the permission locks, which `set` is told of.
    public init(engine: any LeaseEngine, image: LeasedImage) {
        self.engine = engine
        self.image = image
    }

    deinit {
        if held.withLock({ $0 }) != nil { try? engine.release(image) }
    }

    /// The mode held now; nil when none.
    public var mode: LeaseMode? { held.withLock { $0 } }

    /// Takes, changes or (nil) gives back the lease; on failure the old mode stays. A lease once
    /// lost is not taken again.
    public func set(_ mode: LeaseMode?) throws(LockingError) {
        try held.withLock { (held) throws(LockingError) in
            guard held != mode else { return }
            if let mode {
                if let lost = lostError.withLock({ $0 }) ?? engine.loss { throw lost }
                try engine.acquire(image, mode, holding: held)
            } else {
                if held != nil, let lost = engine.loss { lostError.withLock { $0 = $0 ?? lost } }
                try engine.release(image)
            }
            held = mode
            isHeld.store(mode != nil, ordering: .releasing)
        }
    }

    /// Why no write may be issued under this lease any more.
    public var loss: LockingError? {
        if let lost = lostError.withLock({ $0 }) { return lost }
        return mode != nil ? engine.loss : nil
    }

    /// Admits one write to the leased file: false when no lease is held (the write runs
    /// unguarded), true when the engine admitted it (call `endWrite` after), or the loss.
    public func beginWrite() throws(LockingError) -> Bool {
        guard isHeld.load(ordering: .acquiring) else { return false }
        try engine.beginWrite()
        return true
    }

    /// Ends a write `beginWrite` admitted, so a fence waiting for admitted writes can go on.
    public func endWrite() {
        engine.endWrite()
    }
}
