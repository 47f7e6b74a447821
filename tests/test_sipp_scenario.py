"""The SIPp scenario through a proxy that stays in the path (Kamailio's record_route)."""

from ivr_lab.sipp_scenario import CallScript, HangUp, Pause, render_scenario


def test_through_a_proxy_ack_and_bye_follow_the_route_set():
    xml = render_scenario(CallScript("140111", steps=[Pause(100), HangUp()], via_proxy=True))
    assert 'rtd="true" timeout="30000" rrs="true"/>' in xml
    assert xml.count("[routes]") == 2  # the ACK and our BYE
    assert "ACK [next_url] SIP/2.0" in xml and "BYE [next_url] SIP/2.0" in xml


def test_without_a_proxy_the_scenario_is_unchanged():
    xml = render_scenario(CallScript("140111", steps=[Pause(100), HangUp()]))
    assert "[routes]" not in xml and "rrs=" not in xml
    assert "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0" in xml
