"""A job's lifecycle: claim, call, finish; what follows a failure; outages; the sweeper;
health probes."""
