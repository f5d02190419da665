"""Several machines, one ensemble: hosts share tasks, messages and presence through
Redis Streams (the layout's ``bus:`` section). Without it nothing here runs."""
