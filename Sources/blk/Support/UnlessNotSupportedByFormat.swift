// For commands that show what an image has: a format without the operation shows nothing
// rather than failing.
import BlockLayer

/// What `body` returns, or nil when the image's format has no such operation (raw's format
/// information, snapshots): for commands that show what there is.
func unlessNotSupportedByFormat<Value>(_ body: () throws(BlockError) -> Value) throws(BlockError) -> Value? {
    do {
        return try body()
    } catch where error.code == .notSupportedByFormat {
        return nil
    }
}
