import StrictJSON

/// The site broker's credentials and ACLs as gatehouse manages them, through a connected
/// dynamic-security admin client. Each operation checks before it changes anything and undoes
/// its own partial work when a later step is refused.
public struct SiteBrokerAdmin {
    public let client: DynsecClient
    public let plan: SiteAccessPlan
    /// Names a device may not take: the admin's and the gateway's own clients.
    public let reservedUsernames: Set<String>

    public init(client: DynsecClient, plan: SiteAccessPlan, reservedUsernames: Set<String>) {
        self.client = client
        self.plan = plan
        self.reservedUsernames = reservedUsernames
    }

    var broker: String { client.endpoint.description }

    // MARK: - Devices

    /// Creates device `id`'s client (username = client id = `id`) with a fresh random password
    /// and its own role; returns the password, which the caller shows once and forgets.
    public func addDevice(_ id: String) throws(SiteBrokerError) -> String {
        try check(id)
        let existing = try client.run([["command": "getClient", "username": .string(id)]])[0]
        if existing.error == nil {
            throw SiteBrokerError(
                .alreadyExists,
                "device \(id) already has a credential on the site broker at \(broker); "
                    + "`gatehouse devices remove \(id)` first to replace it")
        }
        let role = SiteAccessPlan.deviceRole(id)
        // A role left by an interrupted earlier add is replaced, so its ACLs are today's.
        _ = try client.run([["command": "deleteRole", "rolename": .string(role)]])
        try client.require(
            [
                "command": "createRole", "rolename": .string(role), "textname": .string("gatehouse: device \(id)"),
                "acls": .array(plan.deviceACLs(id).map(\.json)),
            ], what: "creating role \(role)")
        let password = SitePassword.generate()
        let created = try client.run([
            [
                "command": "createClient", "username": .string(id), "clientid": .string(id),
                "password": .string(password), "textname": .string("gatehouse: leaf device \(id)"),
                "roles": [["rolename": .string(role), "priority": 0]],
            ]
        ])[0]
        if let error = created.error {
            _ = try? client.run([["command": "deleteRole", "rolename": .string(role)]])
            throw DynsecClient.refusal(error, what: "creating the site-broker client of device \(id)")
        }
        return password
    }

    /// Deletes device `id`'s client (the broker disconnects its sessions) and its role.
    /// Returns false when the broker has no such client. A client that `addDevice` did not
    /// make (no `gatehouse-device-ID` role) is left alone and refused.
    @discardableResult
    public func removeDevice(_ id: String) throws(SiteBrokerError) -> Bool {
        try check(id)
        let role = SiteAccessPlan.deviceRole(id)
        let found = try client.run([["command": "getClient", "username": .string(id)]])[0]
        if found.error != nil {
            _ = try client.run([["command": "deleteRole", "rolename": .string(role)]])
            return false
        }
        let roles = Self.roleNames(found.data["client"])
        guard roles.contains(role) else {
            throw SiteBrokerError(
                .rejected,
                "the site broker's client `\(id)` was not made by `gatehouse devices add` (it has no role \(role)); "
                    + "remove it with mosquitto_ctrl if that is meant")
        }
        try client.require(
            ["command": "deleteClient", "username": .string(id)], what: "deleting the client of device \(id)")
        _ = try client.run([["command": "deleteRole", "rolename": .string(role)]])
        return true
    }

    /// The usernames of the clients that carry a device role of gatehouse's.
    public func deviceClients() throws(SiteBrokerError) -> Set<String> {
        let response = try client.require(
            ["command": "listClients", "verbose": true, "count": -1, "offset": 0], what: "listing the site clients")
        var result = Set<String>()
        for entry in response.data["clients"]?.arrayValue ?? [] {
            guard let username = entry["username"]?.stringValue else { continue }
            if Self.roleNames(entry).contains(SiteAccessPlan.deviceRole(username)) { result.insert(username) }
        }
        return result
    }

    private func check(_ id: String) throws(SiteBrokerError) {
        if let problem = DeviceIdentifier.problem(id) {
            throw SiteBrokerError(.invalidDeviceID, "invalid device id: \(problem)")
        }
        if reservedUsernames.contains(id) {
            throw SiteBrokerError(
                .invalidDeviceID, "`\(id)` is the site broker's admin or gateway client, not a leaf device")
        }
    }

    /// The `rolename`s of a client as `getClient` and `listClients` give it.
    static func roleNames(_ client: JSONValue?) -> Set<String> {
        Set((client?["roles"]?.arrayValue ?? []).compactMap { $0["rolename"]?.stringValue })
    }

    // MARK: - The gateway's own client and the defaults

    /// What `initialize` did, one line an action, and the gateway's new password if it made one.
    public struct InitReport {
        public var actions: [String] = []
        public var gatewayPassword: String?
    }

    /// Makes the broker deny by default, gives the gateway's client its role, and creates that
    /// client if it is missing (or sets a new password with `rotatePassword`). Idempotent.
    public func initialize(gatewayUsername: String, gatewayClientID: String, rotatePassword: Bool)
        throws(SiteBrokerError) -> InitReport
    {
        var report = InitReport()
        try client.require(
            [
                "command": "setDefaultACLAccess",
                "acls": .array(
                    ["publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"].map {
                        ["acltype": .string($0), "allow": false]
                    }),
            ], what: "setting the default ACL access")
        report.actions.append(
            "default ACL access: deny publishClientSend, publishClientReceive, subscribe, unsubscribe")

        let role = SiteAccessPlan.gatewayRole
        let acls = JSONValue.array(plan.gatewayACLs.map(\.json))
        let created = try client.run([["command": "createRole", "rolename": .string(role), "acls": acls]])[0]
        if let error = created.error {
            guard error.lowercased().contains("already exists") else {
                throw DynsecClient.refusal(error, what: "creating role \(role)")
            }
            try client.require(
                ["command": "modifyRole", "rolename": .string(role), "acls": acls], what: "updating role \(role)")
            report.actions.append("role \(role): ACLs updated")
        } else {
            report.actions.append("role \(role): created")
        }
        for acl in plan.gatewayACLs { report.actions.append("  allow \(acl.type) \(acl.topic)") }

        let existing = try client.run([["command": "getClient", "username": .string(gatewayUsername)]])[0]
        if existing.error != nil {
            let password = SitePassword.generate()
            try client.require(
                [
                    "command": "createClient", "username": .string(gatewayUsername),
                    "clientid": .string(gatewayClientID), "password": .string(password),
                    "textname": "gatehouse: the gateway's site client",
                    "roles": [["rolename": .string(role), "priority": 0]],
                ], what: "creating the gateway's client \(gatewayUsername)")
            report.gatewayPassword = password
            report.actions.append("client \(gatewayUsername) (client id \(gatewayClientID)): created with role \(role)")
        } else {
            if !Self.roleNames(existing.data["client"]).contains(role) {
                try client.require(
                    [
                        "command": "addClientRole", "username": .string(gatewayUsername), "rolename": .string(role),
                        "priority": 0,
                    ],
                    what: "giving \(gatewayUsername) the role \(role)")
                report.actions.append("client \(gatewayUsername): role \(role) added")
            } else {
                report.actions.append("client \(gatewayUsername): exists, has role \(role)")
            }
            if rotatePassword {
                let password = SitePassword.generate()
                try client.require(
                    [
                        "command": "setClientPassword", "username": .string(gatewayUsername),
                        "password": .string(password),
                    ],
                    what: "setting a new password for \(gatewayUsername)")
                report.gatewayPassword = password
                report.actions.append("client \(gatewayUsername): new password set")
            }
        }
        return report
    }
}
