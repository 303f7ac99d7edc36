"""MQTT 5.0 request/response with paho: response topic, correlation data,
content type, payload format indicator and user properties pass through;
the message expiry interval is forwarded as what is left."""

from common import Client, PacketTypes, id_on_core, props, run


def main(host, port):
    responder = Client(host, port, id_on_core("rr-responder", 0))
    assert responder.sub("rr/request", 1) == [1]
    requester = Client(host, port, id_on_core("rr-requester", 1))
    assert requester.sub("rr/response/+", 2) == [2]

    request_props = props(
        PacketTypes.PUBLISH,
        ResponseTopic="rr/response/1",
        CorrelationData=b"\x00corr\xff",
        ContentType="application/json",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=30,
        UserProperty=[("trace", "abc"), ("trace", "def"), ("k", "v")],
    )
    assert requester.pub("rr/request", '{"q": 1}', 1, properties=request_props) == 0
    req = responder.msg()
    p = req.properties
    assert req.payload == b'{"q": 1}'
    assert p.ResponseTopic == "rr/response/1", p
    assert p.CorrelationData == b"\x00corr\xff", p
    assert p.ContentType == "application/json", p
    assert p.PayloadFormatIndicator == 1, p
    assert 29 <= p.MessageExpiryInterval <= 30, p
    assert p.UserProperty == [("trace", "abc"), ("trace", "def"), ("k", "v")], p

    reply_props = props(PacketTypes.PUBLISH, CorrelationData=p.CorrelationData)
    assert responder.pub(p.ResponseTopic, "answer", 2, properties=reply_props) == 0
    rep = requester.msg()
    assert rep.topic == "rr/response/1" and rep.payload == b"answer"
    assert rep.properties.CorrelationData == b"\x00corr\xff"
    assert not hasattr(rep.properties, "MessageExpiryInterval")


run(main)
