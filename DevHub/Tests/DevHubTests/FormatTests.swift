import Testing

@testable import DevHubKit

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
