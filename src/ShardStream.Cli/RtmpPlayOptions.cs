using System.CommandLine;
using Microsoft.Extensions.Logging;
using ShardStream.Rtmp;

namespace ShardStream.Cli;

/// <summary><c>--rtmp-play HOST:PORT</c> and <c>--rtmp-play-name NAME</c>: local RTMP players of a node's stream.</summary>
internal sealed class RtmpPlayOptions
{
    public Option<string?> Address { get; } = new("--rtmp-play") { Description = "HOST:PORT to serve the stream to RTMP players on (ffplay, VLC, ffmpeg: rtmp://HOST:PORT/live/NAME); the stream must be FLV (an RTMP publish, or FLV on stdin)." };

    public Option<string> Name { get; } = new("--rtmp-play-name") { Description = "With --rtmp-play (refused without it): the stream name players ask for (the last part of their URL); not the publisher's key.", DefaultValueFactory = _ => "stream" };

    public RtmpPlayOptions()
    {
        // An empty name is a stream no player can ask for: every play would be refused.
        Name.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && string.IsNullOrWhiteSpace(result.Tokens[^1].Value))
                result.AddError("--rtmp-play-name: the stream name cannot be empty (players ask for rtmp://HOST:PORT/live/NAME)");
        });
    }

    public IEnumerable<Option> All => [Address, Name];

    /// <summary>The error for <c>--rtmp-play-name</c> given without <c>--rtmp-play</c> (no server to name a stream for); null otherwise.</summary>
    public string? NameWithoutAddress(ParseResult parse) =>
        CommonOptions.Given(parse, Name) && parse.GetValue(Address) is null
            ? CommonOptions.NoEffect("--rtmp-play-name", "without --rtmp-play")
            : null;

    /// <summary>Starts the server when the flag is given; null otherwise.</summary>
    public async Task<RtmpPlay?> StartAsync(ParseResult parse, ILoggerFactory loggers, CancellationToken ct)
    {
        if (parse.GetValue(Address) is not { } address) return null;
        var hub = new FlvPlayHub();
        var server = await RtmpServer.StartAsync(new RtmpServerOptions { ListenAddress = address, Play = hub, PlayName = parse.GetValue(Name)!, OpenFileLimit = DescriptorLimit.OpenFiles() }, loggers, ct);
        return new RtmpPlay(server, hub);
    }
}

/// <summary>A running <c>--rtmp-play</c> server and the hub it serves.</summary>
internal sealed class RtmpPlay(RtmpServer server, FlvPlayHub hub) : IAsyncDisposable
{
    public FlvPlayHub Hub => hub;

    public async ValueTask DisposeAsync()
    {
        hub.Complete();
        await server.DisposeAsync();
    }
}
