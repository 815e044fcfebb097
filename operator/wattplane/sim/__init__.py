"""Virtual-time fleet simulator: the real planner and agent code against simulated GPUs.

Nothing here sleeps, reads a wall clock or opens a socket. Time is a float of virtual seconds since
the simulation start; power is piecewise constant between events, so energy and carbon integrate
exactly and a day of a 512-GPU fleet runs in seconds.
"""
