import CQpidProton
import FoundationEssentials
import IoTHubWire
import NIOCore
import StrictJSON

// What devices do on an AMQP connection (docs/protocols.md §3): CBS put-tokens, telemetry,
// cloud-to-device messages, direct methods and twins.

extension AMQPConnection {
    /// Token types the SDKs put (docs/protocols.md §3.1).
    static let tokenTypes: Set<String> = ["servicebus.windows.net:sastoken", "azure-devices.net:sastoken"]

    // MARK: CBS

    /// A put-token request on `$cbs`. It is settled at once, before the response, which uAMQP
    /// requires (docs/protocols.md §3.4); the response carries `status-code` (an int) and
    /// `status-description`, correlated by the request's message-id as it came (a ulong from
    /// the C SDK).
    func handlePutToken(_ bytes: [UInt8], delivery: OpaquePointer, on state: LinkState) {
        settle(delivery, on: state, ProtonOutcome.accepted)
        guard let request = ProtonCodec.decode(bytes) else {
            logger.notice("ignoring a $cbs message that is not an AMQP message")
            return
        }
        func reply(_ status: Int32, _ description: String) {
            if status != 200 { logger.notice("CBS put-token refused (\(status)): \(description)") }
            sendCBSResponse(to: request, status: status, description: description)
        }
        guard request.applicationProperty("operation")?.stringValue == "put-token" else {
            reply(400, "operation must be put-token")
            return
        }
        guard let type = request.applicationProperty("type")?.stringValue, Self.tokenTypes.contains(type) else {
            reply(400, "type must be one of \(Self.tokenTypes.sorted().joined(separator: ", "))")
            return
        }
        guard let name = request.applicationProperty("name")?.stringValue,
            let audience = AMQPDeviceAddress(audience: name)
        else {
            reply(404, "name must be the audience {host}/devices/{deviceId}")
            return
        }
        guard audience.hostName?.lowercased() == hub.hubName.lowercased() else {
            reply(
                404,
                "the audience names hub \"\(audience.hostName?.prefix(100) ?? "")\"; this hub is \"\(hub.hubName)\"")
            return
        }
        guard audience.moduleID == nil else {
            reply(401, "module identities are not supported")
            return
        }
        let deviceID = audience.deviceID
        guard let text = String(validating: request.bodyBytes, as: UTF8.self), let token = SASToken(text) else {
            reply(401, "the body is not a SAS token")
            return
        }
        let isNew = identities[deviceID] == nil
        guard !isNew || identities.count + pendingNewIdentities < AMQPLimits.maxIdentities else {
            reply(403, "this connection already carries \(AMQPLimits.maxIdentities) identities")
            return
        }
        if isNew { pendingNewIdentities += 1 }
        guard let context else { return }
        let store = hub.store
        let expectedResource = "\(hub.hubName)/devices/\(deviceID)"
        hub.threadPool.runIfActive(eventLoop: context.eventLoop) { () -> SASVerdict? in
            guard let device = try store.device(deviceID) else { return nil }
            return SASVerifier.verify(token, expectedResource: expectedResource, keys: device.keys)
        }.assumeIsolated().whenComplete { [self] result in
            if isNew { pendingNewIdentities -= 1 }
            guard !torn else { return }
            switch result {
            case .success(.valid?):
                authenticated(deviceID, expiry: token.expiry)
                reply(200, "OK")
            case .success(let verdict?):
                reply(401, "device \(deviceID): \(verdict)")
            case .success(nil):
                reply(401, "no device \"\(deviceID)\" in the registry")
            case .failure(let error):
                logger.error("cannot check a token of \(deviceID): \(error)")
                reply(500, "internal error")
            }
            processSoon()
        }
    }

    private func sendCBSResponse(to request: AMQPMessage, status: Int32, description: String) {
        cbsResponseLinks.removeAll { !$0.open }
        guard
            let link = cbsResponseLinks.first(where: { $0.remoteAddress != nil && $0.remoteAddress == request.replyTo })
                ?? cbsResponseLinks.first
        else {
            logger.notice("no $cbs receiver link to answer a put-token on")
            return
        }
        var response = AMQPMessage()
        response.correlationID = request.messageID
        response.to = request.replyTo
        response.applicationProperties = [
            ("status-code", .int32(status)), ("status-description", .string(description)),
        ]
        enqueue(ProtonCodec.encode(response), on: link)
    }

    /// A device's token checked out: it joins this connection (or renews its expiry).
    private func authenticated(_ deviceID: String, expiry: Int64) {
        everAuthenticated = true
        let identity: Identity
        if let existing = identities[deviceID] {
            identity = existing
            identity.expiry = expiry
            identity.connection.tokenExpiry.store(expiry, ordering: .relaxed)
            logger.debug("device \(deviceID) renewed its token (expires at \(expiry))")
        } else {
            guard let context else { return }
            let connection = DeviceConnection(
                deviceID: deviceID, id: hub.nextID(), connectionID: id, transport: .amqp,
                connectionDetail: authenticationDetail, channel: context.channel,
                endpoint: NIOLoopBound(self, eventLoop: context.eventLoop), remoteAddress: remoteDescription,
                cleanSession: true, tokenExpiry: expiry)
            identity = Identity(connection: connection, expiry: expiry)
            identities[deviceID] = identity
            let (_, _, replaced) = hub.attach(connection)
            if let replaced {
                replaced.execute { transport in
                    transport.dropDevice(
                        deviceID: deviceID, reason: "a new connection for device \(deviceID) replaced this one")
                }
            }
            logger.info("device \(deviceID) connected over AMQP (\(identities.count) on this connection)")
        }
        scheduleExpiry(identity)
    }

    /// Takes the device off this connection when its token expires (as IoT Hub closes its
    /// links, docs/protocols.md §3.4), unless a renewal moved the expiry on by then.
    private func scheduleExpiry(_ identity: Identity) {
        identity.expiryTimer?.cancel()
        guard let context, let delay = DevHubLimits.delay(untilEpochSeconds: identity.expiry) else { return }
        identity.expiryTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let deviceID = identity.connection.deviceID
            guard identities[deviceID] === identity else { return }
            guard identity.expiry <= Int64(Date().timeIntervalSince1970) else {
                scheduleExpiry(identity)
                return
            }
            drop(
                deviceID, condition: "amqp:unauthorized-access",
                reason: "the CBS token of device \(deviceID) expired at \(identity.expiry)")
            processSoon()
        }
    }

    /// Takes a device off this connection: its links close with `condition`, it leaves the hub.
    func drop(_ deviceID: String, condition: String, reason: String) {
        guard let identity = identities.removeValue(forKey: deviceID) else { return }
        logger.info("device \(deviceID) leaves the AMQP connection: \(reason)")
        identity.expiryTimer?.cancel()
        for link in identity.links {
            if let state = links[link] { closeLink(state, condition, reason) }
        }
        methodCalls = methodCalls.filter { $0.value.deviceID != deviceID }
        hub.detach(identity.connection, subscriptions: [:])
    }

    // MARK: Telemetry

    /// A telemetry message, or a batch of them (docs/protocols.md §3.4): stored like MQTT
    /// telemetry (the properties as a property bag on the MQTT topic), accepted once on disk.
    func handleTelemetry(_ bytes: [UInt8], delivery: OpaquePointer, on state: LinkState) {
        guard let deviceID = state.deviceID, let identity = identities[deviceID], let context else {
            settle(delivery, on: state, ProtonOutcome.released)
            return
        }
        identity.connection.noteActivity()
        let messages: [AMQPMessage]
        if let parts = ProtonCodec.batch(bytes) {
            messages = parts.compactMap(ProtonCodec.decode)
        } else if let message = ProtonCodec.decode(bytes) {
            messages = [message]
        } else {
            settle(delivery, on: state, ProtonOutcome.rejected, condition: ("amqp:decode-error", "not an AMQP message"))
            return
        }
        var records: [TelemetryRecord] = []
        for message in messages {
            let properties = message.telemetryProperties
            let payload = message.bodyBytes
            let topic = IoTHubTopic.telemetry(deviceID: deviceID, propertyBag: PropertyBag.encode(properties))
            if let problem = IoTHubLimits.telemetryProblem(
                payloadBytes: payload.count, properties: properties, topic: "")
            {
                settle(
                    delivery, on: state, ProtonOutcome.rejected, condition: ("amqp:link:message-size-exceeded", problem)
                )
                return
            }
            records.append(
                TelemetryRecord(deviceID: deviceID, topic: topic, properties: properties, payload: payload, qos: 1))
        }
        identity.connection.messagesReceived.add(records.count, ordering: .relaxed)
        let futures = records.map { record in
            let promise = context.eventLoop.makePromise(of: Void.self)
            hub.telemetry.append(record, promise: promise)
            return promise.futureResult
        }
        EventLoopFuture.andAllSucceed(futures, on: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success: settle(delivery, on: state, ProtonOutcome.accepted)
            case .failure:
                logger.error("telemetry of \(deviceID) could not be stored")
                settle(delivery, on: state, ProtonOutcome.released)
            }
            processSoon()
        }
    }

    // MARK: Cloud-to-device

    /// Sends the device's queued messages that are not in flight on its C2D link.
    func deliverC2D(_ identity: Identity) {
        guard let link = identity.c2dLink, link.open, let context else { return }
        if identity.c2d.fetching {
            identity.c2d.fetchAgain = true
            return
        }
        identity.c2d.fetching = true
        let deviceID = identity.connection.deviceID
        let store = hub.store
        let limit = DevHubLimits.maxInflight
        let settlements = identity.c2d.settlements
        hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.c2dMessages(deviceID: deviceID, queuedOnly: true, limit: limit)
        }.assumeIsolated().whenComplete { [self] result in
            identity.c2d.fetching = false
            guard !torn, identities[deviceID] === identity, let link = identity.c2dLink, link.open else { return }
            guard identity.c2d.settlements == settlements else {
                // A settlement was written while this fetch ran: its list may be stale.
                deliverC2D(identity)
                return
            }
            switch result {
            case .success(let messages):
                for message in messages where !identity.c2d.inFlight.contains(message.sequence) {
                    guard identity.c2d.inFlight.count < limit else { break }
                    identity.c2d.inFlight.insert(message.sequence)
                    let amqp = AMQPMessage.cloudToDevice(
                        message, lockToken: UUID(), deliveryCount: message.deliveryCount)
                    logger.info("delivering C2D message \(message.messageID) to \(deviceID) over AMQP")
                    enqueue(ProtonCodec.encode(amqp), on: link, c2dSequence: message.sequence)
                }
            case .failure(let error):
                logger.error("cannot read the C2D queue of \(deviceID): \(error)")
            }
            if identity.c2d.fetchAgain {
                identity.c2d.fetchAgain = false
                deliverC2D(identity)
            }
            processSoon()
        }
    }

    /// The device settled a C2D message: accepted completes it, released (or modified) abandons
    /// it, rejected rejects it (docs/protocols.md §3.2); recorded, then the queue moves on.
    func c2dSettled(_ sequence: Int64, outcome remote: UInt64, deviceID: String) {
        guard let context else { return }
        let outcome: C2DOutcome
        switch remote {
        case ProtonOutcome.rejected: outcome = .rejected
        case ProtonOutcome.released, ProtonOutcome.modified: outcome = .abandoned
        default: outcome = .completed
        }
        let store = hub.store
        hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.settleC2D(sequence: sequence, outcome: outcome)
        }.assumeIsolated().whenComplete { [self] result in
            guard !torn, let identity = identities[deviceID] else { return }
            identity.c2d.settlements += 1
            identity.c2d.inFlight.remove(sequence)
            switch result {
            case .success(let state):
                logger.info("device \(deviceID) \(outcome.rawValue) C2D message \(sequence) (now \(state ?? "gone"))")
            case .failure(let error):
                logger.error("cannot record the C2D outcome of \(deviceID): \(error)")
            }
            deliverC2D(identity)
            processSoon()
        }
    }

    // MARK: Direct methods

    /// A method response: the request's correlation-id, `IoThub-status`, the body.
    func handleMethodResponse(_ bytes: [UInt8], delivery: OpaquePointer, on state: LinkState) {
        settle(delivery, on: state, ProtonOutcome.accepted)
        guard let deviceID = state.deviceID, let response = ProtonCodec.decode(bytes),
            let correlation = response.correlationID
        else {
            logger.notice("ignoring a method response without a correlation-id")
            return
        }
        guard let call = methodCalls[correlation.description.lowercased()], call.deviceID == deviceID else {
            logger.notice("device \(deviceID) answered an unknown method request \(correlation)")
            return
        }
        methodCalls.removeValue(forKey: correlation.description.lowercased())
        let status = response.applicationProperty("IoThub-status")?.intValue ?? 500
        hub.completeMethod(
            deviceID: deviceID, requestID: call.requestID,
            result: MethodResult(status: Int(clamping: status), payload: response.bodyBytes))
    }

    // MARK: Twin

    /// A twin request (docs/protocols.md §3.2): annotations `operation` and `resource`, a
    /// correlation-id; answered on the device's twin sender with the annotation `status`.
    func handleTwinRequest(_ bytes: [UInt8], delivery: OpaquePointer, on state: LinkState) {
        settle(delivery, on: state, ProtonOutcome.accepted)
        guard let deviceID = state.deviceID, let identity = identities[deviceID],
            let request = ProtonCodec.decode(bytes), let context
        else { return }
        let operation = request.annotation("operation")?.stringValue?.uppercased() ?? ""
        let resource = request.annotation("resource")?.stringValue ?? ""
        let correlation = request.correlationID
        func respond(_ status: Int32, version: Int? = nil, body: [UInt8]? = nil) {
            guard let link = identity.twinResponseLink, link.open else {
                logger.notice("device \(deviceID) sent a twin request without a twin receiver link")
                return
            }
            var response = AMQPMessage()
            response.correlationID = correlation
            response.messageAnnotations = [("status", .int32(status))]
            if let version { response.messageAnnotations.append(("version", .int(Int64(version)))) }
            if let body { response.body = .data(body) }
            enqueue(ProtonCodec.encode(response), on: link)
        }
        let store = hub.store
        switch (operation, resource) {
        case ("GET", _):
            hub.threadPool.runIfActive(eventLoop: context.eventLoop) { try store.twin(deviceID) }
                .assumeIsolated().whenComplete { [self] result in
                    switch result {
                    case .success(let twin): respond(200, body: twin.deviceDocument.utf8Bytes)
                    case .failure(let error):
                        logger.error("cannot read the twin of \(deviceID): \(error)")
                        respond(500)
                    }
                    processSoon()
                }
        case ("PATCH", "/properties/reported"):
            guard let patch = try? JSONValue(parsing: request.bodyBytes), patch.isObject else {
                respond(400)
                return
            }
            hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
                try store.patchTwin(deviceID, desired: false, patch: patch)
            }.assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let twin): respond(204, version: twin.reportedVersion)
                case .failure(let error):
                    logger.error("cannot patch the twin of \(deviceID): \(error)")
                    respond(500)
                }
                processSoon()
            }
        case ("PUT", "/notifications/twin/properties/desired"):
            identity.desiredSubscribed = true
            respond(200)
        case ("DELETE", "/notifications/twin/properties/desired"):
            identity.desiredSubscribed = false
            respond(200)
        default:
            respond(400)
        }
    }
}

// MARK: - What the hub asks

extension AMQPConnection: DeviceTransport {
    func deliverC2D(deviceID: String) {
        guard let identity = identities[deviceID] else { return }
        deliverC2D(identity)
        processSoon()
    }

    /// Sends the request on the device's methods sender: correlation-id a uuid (the C SDK needs
    /// one), `IoThub-methodname`, the payload as a data section (docs/protocols.md §3.4).
    func sendMethodRequest(deviceID: String, name: String, requestID: String, payload: [UInt8]) -> Bool {
        guard let identity = identities[deviceID], let link = identity.methodRequestLink, link.open else {
            return false
        }
        let correlation = UUID()
        let key = AMQPMessageID.uuid(correlation).description
        if methodCalls.count >= 1000 {
            let cutoff = Date().addingTimeInterval(-Double(IoTHubLimits.directMethodTimeoutSeconds.upperBound))
            methodCalls = methodCalls.filter { $0.value.sentAt > cutoff }
        }
        methodCalls[key] = MethodCall(deviceID: deviceID, requestID: requestID, sentAt: Date())
        var request = AMQPMessage()
        request.messageID = .uuid(correlation)
        request.correlationID = .uuid(correlation)
        request.applicationProperties = [("IoThub-methodname", .string(name))]
        request.body = .data(payload)
        enqueue(ProtonCodec.encode(request), on: link)
        processSoon()
        return true
    }

    /// A desired-properties patch on the twin sender: no correlation-id, the annotation
    /// `version`, the patch as the body.
    func pushDesired(deviceID: String, version: Int, patch: [UInt8]) {
        guard let identity = identities[deviceID], identity.desiredSubscribed, let link = identity.twinResponseLink
        else { return }
        var message = AMQPMessage()
        message.messageAnnotations = [("version", .int(Int64(version)))]
        message.body = .data(patch)
        enqueue(ProtonCodec.encode(message), on: link)
        processSoon()
    }

    func dropDevice(deviceID: String, reason: String) {
        drop(deviceID, condition: "amqp:unauthorized-access", reason: reason)
        processSoon()
    }
}
