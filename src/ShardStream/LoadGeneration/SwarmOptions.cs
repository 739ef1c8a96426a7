using System.Net;
using System.Net.Sockets;
using ShardStream.Wire;

namespace ShardStream.LoadGeneration;

/// <summary>What a <see cref="Swarm"/> does: how many peers join, how fast, for how long they stay, and from where.</summary>
public sealed record SwarmOptions
{
    /// <summary>The coordinator's address (the swarm does not follow redirects: give the coordinator itself).</summary>
    public required string CoordinatorAddress { get; init; }

    /// <summary>How many peers join in the ramp.</summary>
    public int Peers { get; init; } = 1000;

    /// <summary>Joins started per second during the ramp (and leaves per second at the end).</summary>
    public double JoinRate { get; init; } = 1000;

    /// <summary>How long the peers stay connected after the ramp, heartbeating.</summary>
    public TimeSpan Hold { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>During the hold: peers per second that leave, each replaced at once by a new joiner.</summary>
    public double ChurnRate { get; init; }

    /// <summary>The first local address the peers use (IPv4); the next ones count up from it (127.1.0.1, 127.1.0.2, …).</summary>
    public string FirstAddress { get; init; } = "127.1.0.1";

    /// <summary>How many local addresses the peers are spread over (each gives its own ~28k ephemeral ports).</summary>
    public int Addresses { get; init; } = 100;

    /// <summary>The upload each peer declares, in percent of the stream rate; <see cref="Hello.DefaultUpload"/> for the default (K+1 shard-streams). With 0 the coordinator does not probe.</summary>
    public ushort UploadPercent { get; init; } = Hello.DefaultUpload;

    /// <summary>Each peer sends a heartbeat this often on its control link (a real peer: a fifth of its heartbeat timeout).</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A join with no Welcome within this time counts as failed.</summary>
    public TimeSpan JoinTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>At most this many joins wait for their Welcome at once; the ramp slows down rather than pass it (the report says so).</summary>
    public int MaxJoinsInFlight { get; init; } = 4096;

    /// <summary>Throws <see cref="ArgumentException"/> with a message for a user when a setting cannot work.</summary>
    public void Validate()
    {
        if (Peers < 1) throw new ArgumentException("--peers must be at least 1");
        if (JoinRate <= 0) throw new ArgumentException("--join-rate must be positive");
        if (ChurnRate < 0) throw new ArgumentException("--churn cannot be negative");
        if (Addresses < 1) throw new ArgumentException("--addresses must be at least 1");
        if (Hold < TimeSpan.Zero) throw new ArgumentException("--hold cannot be negative");
        if (HeartbeatInterval <= TimeSpan.Zero) throw new ArgumentException("the heartbeat interval must be positive");
        if (!IPAddress.TryParse(FirstAddress, out var first) || first.AddressFamily != AddressFamily.InterNetwork)
            throw new ArgumentException($"--first-address '{FirstAddress}' is not an IPv4 address");
    }

    /// <summary>The local addresses, counting up from <see cref="FirstAddress"/>.</summary>
    internal IPAddress[] LocalAddresses()
    {
        var bytes = IPAddress.Parse(FirstAddress).GetAddressBytes();
        uint first = (uint)((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]);
        var result = new IPAddress[Addresses];
        for (int i = 0; i < Addresses; i++)
        {
            uint a = first + (uint)i;
            result[i] = new IPAddress([(byte)(a >> 24), (byte)(a >> 16), (byte)(a >> 8), (byte)a]);
        }
        return result;
    }
}
