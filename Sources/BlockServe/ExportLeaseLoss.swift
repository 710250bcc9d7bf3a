// ExportLeaseLoss: a fenced lease, as the export reports it. Once sanlock has taken the lease
// away, the block layer refuses every write (FileDriver's one fenced path), and clients get EIO.
// The export says so in the log once, at error level — every later write fails the same way
// and would only repeat it — and the control socket's `status` shows it.
import BlockLayer
import Logging

extension NBDExport {
    /// Why no write may reach the image any more: its lease was taken away. Nil while the lease
    /// is held, or without leases.
    public var leaseLoss: String? { image.lease?.loss?.message }

    /// After a failed request: logs the lease's loss if that is why, the first time.
    func logLeaseLossIfAny(_ logger: Logger) {
        guard let loss = leaseLoss, !leaseLossLogged.exchange(true, ordering: .relaxed) else { return }
        logger.error("the image's lease is lost: every write now fails with EIO", metadata: [
            "export": "\(name)", "image": "\(image.path)", "reason": "\(loss)",
        ])
    }
}
