using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

public class EndpointTests
{
    [Theory]
    [InlineData("127.0.0.1:9000", "127.0.0.1", 9000)]
    [InlineData("example.org:0", "example.org", 0)]
    [InlineData("[::1]:65535", "::1", 65535)]
    [InlineData("peer-3:7000", "peer-3", 7000)]
    public void An_address_splits_into_host_and_port(string address, string host, int port)
    {
        Assert.Equal((host, port), Endpoint.Parse(address));
    }

    [Theory]
    [InlineData("")]
    [InlineData("host")]
    [InlineData(":80")]
    [InlineData("host:")]
    [InlineData("host:http")]
    [InlineData("host:65536")]
    [InlineData("host:+80")]
    [InlineData("[::1]")]
    public void A_malformed_address_is_refused_with_a_readable_message(string address)
    {
        var e = Assert.Throws<FormatException>(() => Endpoint.Parse(address));

        Assert.Contains($"'{address}'", e.Message);
    }

    [Theory]
    [InlineData("10.0.0.1", 80, "10.0.0.1:80")]
    [InlineData("::1", 80, "[::1]:80")]
    [InlineData("name", 1, "name:1")]
    public void Format_is_the_inverse_of_parse(string host, int port, string address)
    {
        Assert.Equal(address, Endpoint.Format(host, port));
        Assert.Equal((host, port), Endpoint.Parse(address));
    }
}
