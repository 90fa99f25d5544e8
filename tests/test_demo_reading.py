"""The demo reads its images as predict does (issue 29): the channel, pixel size and orientation of
each expert-reference image recorded in OUT/expert/images.json, the readers' warnings in problems.json."""
import json

from chromoseg.cli.demo import EXAMPLE, _karyotype


def test_demo_expert_reference_records_how_each_image_was_read(tmp_path):
    from chromoseg.data.importers.mfish import import_mfish

    ref = tmp_path / "expert"
    import_mfish(EXAMPLE, ref / "dataset", progress=False)
    rows = _karyotype(ref / "dataset" / "all.json", ref)
    (img,) = json.loads((ref / "images.json").read_text())["images"]
    assert img["file_name"].endswith("V1701XYD.tif") and img["stem"] == "V1701XYD"
    for key in ("channel", "channel_index", "channels", "pixel_size_um", "pixel_size_source"):
        assert key in img, key
    from chromoseg.data.io import image_record, read_image_with_info

    _, info = read_image_with_info(img["file_name"])
    assert {k: img[k] for k in image_record(info)} == json.loads(json.dumps(image_record(info)))
    assert img["channel"] in img["channels"] + ["luma"]
    assert img["summary"] == rows[0]["counts"].summary == "46,XY"
    assert json.loads((ref / "problems.json").read_text()) == []
