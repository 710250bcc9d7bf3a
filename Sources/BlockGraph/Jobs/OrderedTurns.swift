// OrderedTurns: the copying jobs' workers (ChunkedCopy) prepare chunks in parallel but write
// them strictly in order; each waits on a condition variable (a futex), not a spin, for its turn.
import Glibc

/// Turns taken in order — 0, 1, 2… — by threads that each wait until their number comes up
/// (the conversion workers writing their chunks in order).
final class OrderedTurns: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Guarded by `mutex`.
    private var current = 0

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func wait(for turn: Int) {
        pthread_mutex_lock(mutex)
        while current != turn { pthread_cond_wait(condition, mutex) }
        pthread_mutex_unlock(mutex)
    }

    /// Ends the turn in progress; the next one's thread goes on.
    func endTurn() {
        pthread_mutex_lock(mutex)
        current += 1
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }
}
