// formatted: printf-style numbers for the tables benchmarks print — Foundation's
// String(format:) without loading Foundation (and ICU) into every blk command.
import Glibc

/// `format` filled in by vsnprintf: numbers only (no %@).
package func formatted(_ format: String, _ arguments: CVarArg...) -> String {
    withVaList(arguments) { list in
        var buffer = [CChar](repeating: 0, count: 256)
        let needed = Int(vsnprintf(&buffer, buffer.count, format, list))
        if needed >= buffer.count {
            buffer = [CChar](repeating: 0, count: needed + 1)
            _ = withVaList(arguments) { again in vsnprintf(&buffer, buffer.count, format, again) }
        }
        return String(decoding: buffer.prefix(max(needed, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
