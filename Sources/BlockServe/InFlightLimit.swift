// InFlightLimit: the requests under way on one connection, at most `limit`. The connection's
// reader takes a slot before it hands a request to the block layer and suspends only at the
// limit; the reply's writer frees the slot once the reply has reached the socket, and a slot
// freed while the reader waits passes straight to it.
import Synchronization

final class InFlightLimit: Sendable {
    private struct State {
        var free: Int
        /// The reader, waiting for a slot (there is one reader per connection).
        var waiting: CheckedContinuation<Void, Never>?

        mutating func take() -> Bool {
            guard free > 0 else { return false }
            free -= 1
            return true
        }
    }

    private let limit: Int
    private let state: Mutex<State>

    init(_ limit: Int) {
        self.limit = limit
        state = Mutex(State(free: limit))
    }

    /// Takes a slot, waiting for one at the limit.
    func acquire() async {
        if state.withLock({ $0.take() }) { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state in
                if state.take() { return true }
                state.waiting = continuation
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Frees a slot: to the waiting reader if there is one.
    func release() {
        let reader = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let reader = state.waiting else {
                state.free += 1
                return nil
            }
            state.waiting = nil
            return reader
        }
        reader?.resume()
    }

    /// Returns once every slot is free: every request under way has been answered (or its
    /// client is gone). The slots stay taken: nothing more is to start.
    func drain() async {
        for _ in 0..<limit { await acquire() }
    }
}
