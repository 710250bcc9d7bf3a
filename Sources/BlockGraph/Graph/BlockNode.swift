// BlockNode: one node of the graph — a driver, its children, and what its parents ask of it.
//
// Permissions (QEMU's bdrv_child_perm / bdrv_check_perm, simplified to prepare-or-restore):
// each parent registers what it needs; the node asks each child for what its driver derives
// from the union of its parents' needs, then applies the union itself. Children are updated
// first, so the file's locks cover a new need before any parent relies on it; a failure puts
// every node back as it was.
import BlockLocking
import Synchronization

/// One node of the graph: a driver with its children, and the permissions its parents ask for,
/// which it passes down so the file node can take them as locks.
public final class BlockNode: Sendable {
    /// What runs this node's requests.
    public let driver: any BlockDriver
    /// The nodes below, each in its role: a format's file, and its backing image.
    public let children: [(role: ChildRole, node: BlockNode)]
    private let parentNeeds = Mutex<[ObjectIdentifier: PermissionRequest]>([:])

    /// A node over `children`, which it holds for as long as it lives: a parent keeps its children
    /// open.
    public init(driver: any BlockDriver, children: [(role: ChildRole, node: BlockNode)] = []) {
        self.driver = driver
        self.children = children
    }

    /// The union of what every parent asks of this node now.
    public var needs: PermissionRequest {
        parentNeeds.withLock { Self.union($0.values) }
    }

    /// Records what `parent` asks of this node (`.none` detaches it) and pushes the result down
    /// the graph; on failure everything below is left as it was.
    public func setNeeds(_ request: PermissionRequest, of parent: ObjectIdentifier) throws(BlockError) {
        let (previous, union) = parentNeeds.withLock { needs in
            let previous = needs[parent]
            needs[parent] = request == .none ? nil : request
            return (previous, Self.union(needs.values))
        }
        do {
            try apply(union)
        } catch {
            let restored = parentNeeds.withLock { needs in
                needs[parent] = previous
                return Self.union(needs.values)
            }
            try? apply(restored)
            throw error
        }
    }

    /// Pushes `union` to the children, then to the driver. A caller whose push failed pushes the
    /// previous union again, which every node below can take back (its locks were held before).
    private func apply(_ union: PermissionRequest) throws(BlockError) {
        for (role, child) in children {
            try child.setNeeds(driver.childPermissions(role: role, parentsNeed: union), of: ObjectIdentifier(self))
        }
        try driver.applyPermissions(union)
    }

    private static func union(_ requests: some Sequence<PermissionRequest>) -> PermissionRequest {
        requests.reduce(PermissionRequest.none) {
            PermissionRequest(held: $0.held.union($1.held), unshared: $0.unshared.union($1.unshared))
        }
    }

    /// The node that holds the storage's locks: this one, or the first down the `file` chain.
    public var protocolNode: BlockNode {
        if driver.transactionLock != nil { return self }
        return children.first { $0.role == .file }?.node.protocolNode ?? self
    }

    /// Every node below and including this one, depth first: backing chains included.
    public var subtree: [BlockNode] { [self] + children.flatMap { $0.node.subtree } }

    /// This node and those below it that a write to it may reach: not into a backing chain,
    /// which stays read-only however the image above it is reopened.
    public var writableSubtree: [BlockNode] {
        [self] + children.filter { $0.role != .backing }.flatMap { $0.node.writableSubtree }
    }
}
