// Threads of our own for the conversion and benchmark workers: blocking I/O on each, which a
// dispatch queue's few threads would serialize.
import Glibc

/// Runs `body` on a new detached thread.
package func startThread(_ body: @escaping @Sendable () -> Void) {
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
