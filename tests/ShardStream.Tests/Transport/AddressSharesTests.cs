using System.Net;
using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

/// <summary>
/// What one stranger's share is counted by (docs/security.md, "a flood of connections"): an IPv4
/// address, or an IPv6 /64, since one IPv6 host is given a whole /64 and picks any address in it.
/// </summary>
public sealed class AddressSharesTests
{
    [Theory]
    [InlineData("2001:db8:1:2::5", "2001:db8:1:2::/64")]
    [InlineData("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64")]
    [InlineData("2001:db8:1:3::5", "2001:db8:1:3::/64")]
    [InlineData("fe80::1234:5678", "fe80::/64")]
    [InlineData("fe80::1234:5678%2", "fe80::%2/64")]
    [InlineData("fe80::9%3", "fe80::%3/64")]
    [InlineData("10.0.0.2", "10.0.0.2")]
    [InlineData("::ffff:10.0.0.2", "10.0.0.2")]
    [InlineData("::1", "::1")]
    [InlineData("127.0.0.1", "127.0.0.1")]
    public void An_address_is_counted_in_its_IPv4_address_or_its_IPv6_64(string address, string group)
    {
        Assert.Equal(group, AddressShares.GroupOf(IPAddress.Parse(address)));
    }

    [Theory]
    [InlineData("[2001:db8:1:2::5]:5000", "2001:db8:1:2::/64")]
    [InlineData("[::ffff:10.0.0.2]:5000", "10.0.0.2")]
    [InlineData("10.0.0.2:5000", "10.0.0.2")]
    [InlineData("[::1]:5000", "::1")]
    [InlineData("coord:1", "coord")]
    [InlineData("Victim.Example.:1", "victim.example")]
    [InlineData("?", null)]
    public void A_transports_remote_address_is_counted_in_its_hosts_group(string remote, string? group)
    {
        Assert.Equal(group, AddressShares.GroupOf(remote));
    }

    /// <summary>The HTTP host's and its viewers' share: as above, but the node's own host and a connection with no IP address are held to none.</summary>
    [Theory]
    [InlineData("2001:db8:1:2::5", "2001:db8:1:2::/64")]
    [InlineData("::ffff:10.0.0.2", "10.0.0.2")]
    [InlineData("127.0.0.2", "127.0.0.2")]
    [InlineData("127.0.0.1", null)]
    [InlineData("::ffff:127.0.0.1", null)]
    [InlineData("::1", null)]
    [InlineData(null, null)]
    public void The_http_share_leaves_out_the_nodes_own_host_and_no_address(string? address, string? share)
    {
        Assert.Equal(share, ConnectionCap.ShareOf(address is null ? null : IPAddress.Parse(address)));
    }

    [Fact]
    public void Addresses_of_one_64_fill_one_share_and_leave_the_next_64_its_own()
    {
        var shares = new AddressShares(2);
        foreach (string a in new[] { "2001:db8:1:2::1", "2001:db8:1:2::2" })
        {
            string group = AddressShares.GroupOf(IPAddress.Parse(a));
            Assert.False(shares.IsFull(group));
            shares.Take(group);
        }
        Assert.True(shares.IsFull(AddressShares.GroupOf(IPAddress.Parse("2001:db8:1:2:abcd::3"))));
        Assert.False(shares.IsFull(AddressShares.GroupOf(IPAddress.Parse("2001:db8:1:3::1"))));
        shares.Release("2001:db8:1:2::/64");
        Assert.Equal(1, shares.HeldBy("2001:db8:1:2::/64"));
        Assert.False(shares.IsFull(null));
        shares.Take(null);
        Assert.Equal(0, shares.HeldBy(null));
    }
}
