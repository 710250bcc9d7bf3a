// SystemCall: the one place that owns the "-1 means errno, retry EINTR" rule. close(2) is never
// retried: on Linux the descriptor is gone even when close reports EINTR.
import SystemPackage

/// Runs a C call that returns -1 and sets errno on failure, retrying it while it fails with EINTR
/// when `retryOnInterrupt` is set. Inlinable: every read and write of every driver goes through
/// it, and unspecialized across the module boundary it instantiated `Result`'s metadata through
/// the runtime's locked cache on each call — shared state every I/O thread touched.
@inlinable
public func valueOrErrno<Value: FixedWidthInteger>(
    _ name: StaticString, retryOnInterrupt: Bool = true, _ call: () -> Value
) -> Result<Value, SystemCallError> {
    while true {
        let value = call()
        if value != -1 { return .success(value) }
        let error = Errno.current
        if error == .interrupted && retryOnInterrupt { continue }
        return .failure(SystemCallError("\(name)", error))
    }
}
