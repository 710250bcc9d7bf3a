// LeaseEngine: a lock manager that works across hosts through the shared storage itself, for
// images whose OFD locks do not reach other hosts (a SAN LUN, NFS mounted nolock). sanlock is the
// one engine today (SanlockEngine); another (a DLM, a cluster service) conforms to the same protocol.

/// One engine's view of the leases of this process.
public protocol LeaseEngine: Sendable {
    /// The engine and where its leases live, for messages: "sanlock lockspace 'vms' in '/srv/leases'".
    var description: String { get }

    /// Takes the lease on `image` in `mode`, or changes the mode of the lease this process already
    /// holds on it (`held`). A refusal throws `.conflict` naming the owners; an engine that cannot
    /// be reached throws `.leaseUnavailable` saying what to start.
    func acquire(_ image: LeasedImage, _ mode: LeaseMode, holding held: LeaseMode?) throws(LockingError)

    /// Gives the lease on `image` back.
    func release(_ image: LeasedImage) throws(LockingError)

    /// Who holds the lease on `image` now, from the lease storage.
    func owners(of image: LeasedImage) throws(LockingError) -> [LeaseOwner]

    /// Set when the leases this engine granted were taken away (the engine fenced the process):
    /// from then on no write may reach an image whose lease came from this engine.
    var loss: LockingError? { get }

    /// Admits one write to an image leased through this engine, or throws the loss (`.lockLost`).
    /// The engine's fence waits for every admitted write to end before it gives the leases up.
    func beginWrite() throws(LockingError)

    /// Ends a write `beginWrite` admitted.
    func endWrite()
}
