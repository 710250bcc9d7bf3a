// WriteGate: lets an image's writes run without a lock while it may be written, and lets a
// reopen or the migration hand-over shut them out and wait for those under way (QEMU drains its
// requests before either): none may reach the file once its write permission is given up.
//
// One atomic word: the writes under way, and a bit for "closed". A write that finds the gate
// closed is not counted at all, so the count only falls while closed, and the last write out
// wakes the one closer.
import Dispatch
import Synchronization

final class WriteGate: Sendable {
    private static let closedBit = 1 << 62
    private let state: Atomic<Int>
    private let drained = DispatchSemaphore(value: 0)

    init(open: Bool) {
        state = Atomic(open ? 0 : Self.closedBit)
    }

    /// Counts a write in, unless the gate is closed; `leave` must follow a `true`.
    func enter() -> Bool {
        var current = state.load(ordering: .relaxed)
        while current & Self.closedBit == 0 {
            let (exchanged, original) = state.compareExchange(expected: current, desired: current + 1, ordering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func leave() {
        if state.subtract(1, ordering: .releasing).newValue == Self.closedBit { drained.signal() }
    }

    /// Admits no more writes and waits for those under way to leave. One closer at a time.
    func close() {
        let before = state.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing).oldValue
        if before & Self.closedBit == 0 && before != 0 { drained.wait() }
    }

    /// Admits writes again.
    func open() {
        state.bitwiseAnd(~Self.closedBit, ordering: .releasing)
    }
}
