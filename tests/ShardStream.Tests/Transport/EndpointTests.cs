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
    [InlineData("::1:1235")]
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

    [Theory]
    [InlineData("0.0.0.0", true)]
    [InlineData("::", true)]
    [InlineData("[::]", true)]
    [InlineData("", true)]
    [InlineData("127.0.0.1", false)]
    [InlineData("::1", false)]
    [InlineData("example.org", false)]
    public void Unspecified_hosts_are_the_any_addresses(string host, bool unspecified)
    {
        Assert.Equal(unspecified, Endpoint.IsUnspecified(host));
    }

    [Theory]
    [InlineData("10.81.0.3:41000", "10.81.0.3")]
    [InlineData("[::1]:41000", "::1")]
    [InlineData("[::ffff:10.81.0.3]:41000", "10.81.0.3")] // an IPv4 peer seen by a dual-stack socket
    [InlineData("p1", "p1")] // the virtual network names hosts without ports
    public void The_host_of_a_remote_address(string remote, string host)
    {
        Assert.Equal(host, Endpoint.HostOf(remote));
    }

    [Theory]
    [InlineData("0.0.0.0:1235", "10.81.0.3:41000", "10.81.0.3:1235")]
    [InlineData("[::]:1235", "[2001:db8::7]:41000", "[2001:db8::7]:1235")]
    [InlineData("[::]:1235", "[::ffff:10.81.0.3]:41000", "10.81.0.3:1235")]
    [InlineData("192.0.2.10:1235", "10.81.0.3:41000", "192.0.2.10:1235")] // a specific address is taken as given
    [InlineData("viewer.example.org:1235", "10.81.0.3:41000", "viewer.example.org:1235")]
    [InlineData("garbage", "10.81.0.3:41000", "garbage")] // nobody will reach it; the probe says so
    public void A_listener_on_every_address_is_advertised_where_its_connection_came_from(string listen, string remote, string advertised)
    {
        Assert.Equal(advertised, Endpoint.Advertised(listen, remote));
    }

    [Theory]
    [InlineData("127.0.0.1:1234", "10.81.1.2:1235", "10.81.1.2:1234")]
    [InlineData("localhost:1234", "[::ffff:10.81.1.2]:1235", "10.81.1.2:1234")] // a dual-stack listener
    [InlineData("[::1]:1234", "[2001:db8::7]:1235", "[2001:db8::7]:1234")]
    [InlineData("0.0.0.0:1234", "10.81.1.2:1235", "10.81.1.2:1234")]
    [InlineData("127.0.0.1:1234", "127.0.0.1:1235", "127.0.0.1:1234")] // the joiner is on this machine too
    [InlineData("10.81.1.2:1234", "10.81.1.3:1235", "10.81.1.2:1234")] // an address others reach is taken as given
    [InlineData("coordinator.example.org:1234", "10.81.1.2:1235", "coordinator.example.org:1234")]
    [InlineData("127.0.0.1:1234", "", "127.0.0.1:1234")] // a transport that does not say
    public void An_address_of_this_machine_only_is_given_as_the_other_machine_reached_it(string address, string local, string given)
    {
        Assert.Equal(given, Endpoint.AsReachedFrom(address, local));
    }

    [Theory]
    [InlineData("127.0.0.1:1234", "192.168.1.5:1235", "203.0.113.5:1235", "203.0.113.5:1234")] // behind a NAT: the advertised host
    [InlineData("0.0.0.0:1234", "192.168.1.5:1235", "viewer.example.org:41235", "viewer.example.org:1234")]
    [InlineData("localhost:1234", "192.168.1.5:1235", "[2001:db8::7]:1235", "[2001:db8::7]:1234")]
    [InlineData("127.0.0.1:1234", "127.0.0.1:1235", "203.0.113.5:1235", "127.0.0.1:1234")] // the joiner is on this machine
    [InlineData("10.81.1.2:1234", "192.168.1.5:1235", "203.0.113.5:1235", "10.81.1.2:1234")] // an address others reach is taken as given
    [InlineData("127.0.0.1:1234", "192.168.1.5:1235", "127.0.0.1:1235", "192.168.1.5:1234")] // an advertised address of this machine only
    public void With_advertise_an_address_of_this_machine_only_is_given_at_the_advertised_host(string address, string local, string advertised, string given)
    {
        Assert.Equal(given, Endpoint.AsReachedFrom(address, local, advertised));
    }

    [Theory]
    [InlineData("0.0.0.0:1234", "HOST:1234")]
    [InlineData("[::]:1234", "HOST:1234")]
    [InlineData("127.0.0.1:1234", "127.0.0.1:1234")]
    [InlineData("[::1]:1234", "[::1]:1234")]
    public void Viewers_are_told_an_address_they_can_dial(string listen, string dial)
    {
        var (address, hint) = Endpoint.ForViewers(listen);

        Assert.Equal(dial, address);
        // 0.0.0.0 is not an address a viewer can connect to: the line says what HOST stands for.
        if (address.StartsWith("HOST", StringComparison.Ordinal)) Assert.StartsWith(" (HOST: an address of this machine that the viewer can reach", hint, StringComparison.Ordinal);
        else Assert.Equal("", hint);
    }
}
