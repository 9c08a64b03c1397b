"""The probe pipeline behind ``ratecontrol.api`` (internal: the API is api.py's).

    track     decode an input once, at the output's rate, up to two channels
    sampling  which segments of a long input the probes encode
    source    the probe source: what each probe encodes, its windows, their scores
    prober    one preset's probes (encode + decode + score a rung) and the ladder search
    session   one input, one scorer, one cache, the probers of each preset
    verify    write the chosen rung and score the written file (a miss steps up)
    auto      codec="auto": every available preset, the smallest output

Concurrency lives in two places: ``Prober`` runs a round's rungs in threads (each one
ffmpeg process) and ``verify`` prepares the check's reference while ffmpeg writes.
"""
