"""The probe pipeline behind ``ratecontrol.api`` (internal: the API is api.py's).

    track     decode an input once, at the output's rate, in the layout the encoder takes
    sampling  which segments of a long input the probes encode
    source    the probe source: what each probe encodes, its windows, their scores
    prober    one preset's probes (encode + decode + score a rung)
    searching the knob or ladder search run over a prober's probes (run_search)
    session   one input, one scorer, one cache, the probers of each preset
    verify    write the chosen rung and score the written file (a miss steps up)
    steps     where the check goes next: a step up after a miss, a step down after a
              sampled search's file passed well above the bar
    auto      codec="auto": every available preset, the smallest output
    output    the output path, checked before any work (folder, container extension)
    encode    one audio input from search to report; a ladder of targets
    streams   inputs with video, subtitles, more audio: the chosen streams re-encoded
    compare   ``score``: two recordings aligned and scored window by window

Concurrency lives in two places: ``Prober`` runs a round's rungs in threads (each one
ffmpeg process) and ``verify`` prepares the check's reference while ffmpeg writes.
"""
