// PermissionLocks: QEMU's permission-lock protocol on one descriptor (block/file-posix.c,
// raw_handle_perm_lock, raw_apply_lock_bytes, raw_check_lock_bytes).
//
// A change of permissions moves through three steps, so the image is never unprotected and a
// failure leaves exactly the old locks:
//
//     prepare ──ok──▶ check ──ok──▶ commit      (lock new bytes; probe; unlock bytes no longer needed)
//        │              │
//        └──fail──▶ abort ◀──fail──┘            (unlock the bytes prepare took)
//
// Only shared locks are taken, so any number of opens can hold byte 100 at once; a conflict is
// found by probing for a write lock on the *other* byte of the pair: holding permission i
// conflicts with someone's byte 200+i, refusing to share i with someone's byte 100+i. Bytes are
// locked and unlocked one at a time and only when they change, as QEMU tracks locked bits per
// descriptor, so a reopen costs only the bytes that differ.

/// The permission locks of one open image. Not thread-safe by itself: `ImageLocks` guards it.
public struct PermissionLocks: Sendable {
    /// The descriptor the permission bytes are locked through, which is also the one probes go
    /// through, so this open's own locks never count as conflicts.
    public let locker: ByteLocker
    /// The image's name as the user gave it, for QEMU's "Is another process using the image [PATH]?".
    public let path: String
    /// What the bytes currently locked stand for.
    public private(set) var locked: PermissionRequest = .none

    /// Starts holding nothing: the first `change(to:)` takes the locks.
    public init(locker: ByteLocker, path: String) {
        self.locker = locker
        self.path = path
    }

    /// Moves the locks from what they are to `request`, or throws and leaves them as they were.
    /// Only dropping permissions needs no check (QEMU skips it too): nothing new is claimed.
    public mutating func change(to request: PermissionRequest) throws(LockingError) {
        let previous = locked
        let onlyDrops = request.held.isSubset(of: previous.held) && request.unshared.isSubset(of: previous.unshared)
        if !onlyDrops {
            do {
                try apply(PermissionRequest(held: previous.held.union(request.held),
                                            unshared: previous.unshared.union(request.unshared)))
                try checkConflicts(for: request)
            } catch {
                try? apply(previous)
                throw error
            }
        }
        // Commit: only unlocks remain, and QEMU treats their failure as a warning. A byte whose
        // unlock failed stays locked until the descriptor closes, which only keeps others out.
        try? apply(request)
        locked = request
    }

    /// Releases every permission byte (close, inactivate).
    public mutating func releaseAll() throws(LockingError) {
        try apply(.none)
    }

    /// Locks the bytes of `target` not yet locked and unlocks those `target` does not name:
    /// held bytes 100–103 first, then 200–203, in QEMU's order (raw_apply_lock_bytes).
    private mutating func apply(_ target: PermissionRequest) throws(LockingError) {
        for permission in ImagePermissions.each {
            try setByte(permission.heldByte, locked: target.held.contains(permission),
                        wasLocked: locked.held.contains(permission))
            if target.held.contains(permission) { locked.held.insert(permission) } else { locked.held.remove(permission) }
        }
        for permission in ImagePermissions.each {
            try setByte(permission.unsharedByte, locked: target.unshared.contains(permission),
                        wasLocked: locked.unshared.contains(permission))
            if target.unshared.contains(permission) { locked.unshared.insert(permission) } else { locked.unshared.remove(permission) }
        }
    }

    private func setByte(_ byte: Int64, locked wanted: Bool, wasLocked: Bool) throws(LockingError) {
        guard wanted != wasLocked else { return }
        if !wanted {
            if case .failure(let failure) = locker.unlock(byte: byte) {
                throw LockingError(.ioError, "Failed to unlock byte \(byte): \(failure.errno)", path: path, cause: failure)
            }
            return
        }
        switch locker.tryLock(.shared, byte: byte) {
        case .success(.acquired):
            return
        case .success(.wouldBlock):
            // Only a foreign *write* lock stops a read lock: not QEMU, but a whole-file locker.
            throw LockingError(.conflict, "Failed to lock byte \(byte)\nIs another process using the image [\(path)]?",
                               path: path, holders: holders(of: byte))
        case .failure(let failure):
            throw LockingError.from(failure, doing: "Failed to lock byte \(byte) of", path: path)
        }
    }

    /// raw_check_lock_bytes: every permission held must be shared by all others, and every
    /// permission refused must be held by none. QEMU's order and words.
    private func checkConflicts(for request: PermissionRequest) throws(LockingError) {
        for permission in ImagePermissions.each where request.held.contains(permission) {
            if try isLockedByOthers(permission.unsharedByte) {
                throw conflict("Failed to get \"\(permission.qemuName)\" lock", byte: permission.unsharedByte)
            }
        }
        for permission in ImagePermissions.each where request.unshared.contains(permission) {
            if try isLockedByOthers(permission.heldByte) {
                throw conflict("Failed to get shared \"\(permission.qemuName)\" lock", byte: permission.heldByte)
            }
        }
    }

    private func isLockedByOthers(_ byte: Int64) throws(LockingError) -> Bool {
        switch locker.probe(byte: byte, for: .exclusive) {
        case .success(let found): return found != nil
        case .failure(let failure): throw LockingError.from(failure, doing: "Failed to probe byte \(byte) of", path: path)
        }
    }

    private func conflict(_ words: String, byte: Int64) -> LockingError {
        LockingError(.conflict, "\(words)\nIs another process using the image [\(path)]?",
                     path: path, holders: holders(of: byte))
    }

    func holders(of byte: Int64) -> [LockHolder] {
        guard case .success(let identity) = LockHolderScan.identity(of: locker.descriptor) else { return [] }
        return LockHolderScan(file: identity, excluding: locker.descriptor).scan().holders.filter { $0.covers(byte: byte) }
    }
}
