// Threads of our own for the copy and benchmark workers: blocking I/O on each, which a
// dispatch queue's few threads would serialize.
import Glibc

/// Runs `body` on a new detached thread.
func startThread(_ body: @escaping @Sendable () -> Void) {
    final class Job { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    var thread = pthread_t()
    let job = Unmanaged.passRetained(Job(body)).toOpaque()
    let started = pthread_create(&thread, nil, { raw in
        Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, job)
    precondition(started == 0, "pthread_create failed: \(started)")
    pthread_detach(thread)
}

/// A mutex and its condition variable, for threads that wait for their turn.
final class TurnCondition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

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

    /// Runs `body` holding the mutex; `body` gets `wait`, which sleeps until the next broadcast.
    func withLock<Result>(_ body: (_ wait: () -> Void) -> Result) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body { pthread_cond_wait(self.condition, self.mutex) }
    }

    func broadcast() { pthread_cond_broadcast(condition) }
}
