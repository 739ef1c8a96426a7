using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace ShardStream.Cli.Http;

/// <summary>
/// One feature of a node's HTTP host (<c>--http</c>): the services it needs and the routes it
/// maps. Every feature of a node maps into the same Kestrel app.
/// </summary>
internal interface IHttpEndpoints
{
    /// <summary>Adds what the routes need to the app's services (before the app is built).</summary>
    void AddServices(IServiceCollection services)
    {
    }

    /// <summary>Maps the routes.</summary>
    void Map(WebApplication app);
}
