import Testing

@testable import DevHubKit

@Suite struct JSONValueTests {
    @Test func keepsMemberOrderAndNumberText() throws {
        let text = #"{"z":1,"a":[true,false,null,-0.50,1E+3],"m":{"x":"\u00e9\n\"q\""}}"#
        let value = try JSONValue(parsing: text)
        #expect(value.description == #"{"z":1,"a":[true,false,null,-0.50,1E+3],"m":{"x":"é\n\"q\""}}"#)
        #expect(try JSONValue(parsing: value.prettyDescription) == value)
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "+1", "\"\\x\"", "\"\u{01}\"", "nul", "1 2",
        "{'a':1}",
        "\"\\ud800\"", String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ])
    func rejectsInvalidJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test func deepNestingIsRefusedWithoutRecursionBlowUp() {
        let bomb = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: bomb) }
    }

    @Test func mergePatchFollowsRFC7396() throws {
        let target = try JSONValue(parsing: #"{"a":1,"b":{"c":2,"d":3},"e":[1]}"#)
        let patch = try JSONValue(parsing: #"{"a":null,"b":{"c":null,"f":4},"e":{"x":1},"g":"new"}"#)
        #expect(
            target.merging(patch: patch).description == #"{"b":{"d":3,"f":4},"e":{"x":1},"g":"new"}"#)
    }
}

@Suite struct UsernameTests {
    @Test func hubUsernames() throws {
        let parsed = try #require(
            HubUsername("hub.example/dev-1/?api-version=2021-04-12&DeviceClientType=py%2F2.14"))
        #expect(parsed.hostName == "hub.example")
        #expect(parsed.deviceID == "dev-1")
        #expect(parsed.moduleID == nil)
        #expect(parsed.query["api-version"] == "2021-04-12")
        #expect(parsed.query["DeviceClientType"] == "py/2.14")
        #expect(HubUsername("hub/dev/mod/?api-version=1")?.moduleID == "mod")
        #expect(HubUsername("hub/dev/") != nil)
        for bad in ["", "garbage", "hub/dev", "hub//?a=1", "/dev/?a", "hub/a/b/c/?x", "hub/dev#/?x"] {
            #expect(HubUsername(bad) == nil, "\(bad)")
        }
    }

    @Test func dpsUsernames() throws {
        let parsed = try #require(
            DPSUsername("0ne00ABC/registrations/reg-1/api-version=2019-03-31&ClientVersion=azure%2F2.14"))
        #expect(parsed.idScope == "0ne00ABC")
        #expect(parsed.registrationID == "reg-1")
        for bad in [
            "0ne/registrations/reg", "0ne/registration/reg/api-version=1",
            "/registrations/r/api-version=1",
            "0ne/registrations/reg./api-version=1", "0ne/registrations/r g/api-version=1",
        ] {
            #expect(DPSUsername(bad) == nil, "\(bad)")
        }
    }
}
